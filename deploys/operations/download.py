"""Download a file (or a member of a release tarball), verify its sha256, then install it atomically.

Unlike pyinfra's ``files.download`` (which moves the file into place *before* checking the sum), the
file lands in a temporary path in the destination directory, is checked with ``sha256sum``, and only
then renamed over the destination (``mv -f`` within one filesystem). A wrong sum deletes the
temporary file and fails naming the URL, the expected and the actual sum; an unreachable URL fails
fast (``curl --fail --connect-timeout``) naming the URL.

No-op cost: one fact (``FileStates`` for the destination and its stamp), or none when the caller
passes ``current`` from a snapshot. A stamp file records what was installed: the archive's (or plain
file's) verified sha256, the installed file's sha256, and the installed file's size, mtime, ctime and
inode right after the install.

Why a stamp and a stat, not a hash of the installed file on every run: hashing a 15 MB binary costs
~100-300 ms of the no-op run per file and host, for an answer the stamp already holds. Comparing
(size, mtime, ctime, inode) with the stamp is the quick check mature tools use (rsync, make, git's
index): any write to the file, a chmod/chown, or replacing it (rename, copy, package install) moves its
ctime and usually its inode, and ctime cannot be set back from user space (``touch`` sets mtime only).
Any difference means "not known to be ours": the file is downloaded, verified and installed again,
and stamped afresh. What it does not catch is an edit that restores the ctime as well (setting the system
clock back, writing the block device): someone able to do that owns the host anyway. Set ``verify=True``
to hash the installed file on every run as well (``download_stat_only`` then returns nothing).
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from pyinfra import host
from pyinfra.api import OperationValueError, QuoteString, StringCommand, operation

from facts.files import FileState, FileStates, normalise_mode, state_matches

STAMP_DIR = "/var/lib/spectra-infra/downloads"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# The one remote command of a download. Positional arguments, each quoted by pyinfra:
#   $1 url  $2 dest  $3 sha256  $4 mode  $5 owner (user:group)  $6 member ("" = the file itself,
#   "." = the whole archive into dest as a directory)  $7 strip components  $8 stamp path
#   $9 connect timeout (s)  $10 max time (s)
_SCRIPT = r"""set -eu
url="$1"; dest="$2"; want="$3"; mode="$4"; owner="$5"; member="$6"; strip="$7"; stamp="$8"
if [ "$member" = . ]; then dir="$dest"; else dir="$(dirname "$dest")"; fi
mkdir -p "$dir"
tmp="$(mktemp "$dir/.spectra-download.XXXXXX")"
trap 'rm -rf "$tmp" "$tmp.d" "$tmp.new"' EXIT
if command -v curl >/dev/null 2>&1; then
  curl --fail --silent --show-error --location --connect-timeout "$9" --max-time "${10}" \
    --retry 2 --output "$tmp" "$url" || { echo "download failed: $url" >&2; exit 1; }
elif command -v wget >/dev/null 2>&1; then
  wget --quiet --timeout="$9" --tries=2 --output-document="$tmp" "$url" \
    || { echo "download failed: $url" >&2; exit 1; }
else
  echo "neither curl nor wget is installed to download $url" >&2; exit 1
fi
got="$(sha256sum "$tmp" | cut -d' ' -f1)"
if [ "$got" != "$want" ]; then
  echo "sha256 mismatch for $url: expected $want, got $got; nothing installed" >&2; exit 1
fi
if [ -z "$member" ]; then
  chown "$owner" "$tmp"; chmod "$mode" "$tmp"; mv -f "$tmp" "$dest"
  mkdir -p "$(dirname "$stamp")"
  printf '%s %s %s\n' "$want" "$want" "$(stat -c '%s %.9Y %.9Z %i' "$dest")" > "$stamp.new"
  mv -f "$stamp.new" "$stamp"
elif [ "$member" = . ]; then
  mkdir "$tmp.d"
  tar -xf "$tmp" -C "$tmp.d" --strip-components="$strip" --no-same-owner \
    || { echo "cannot unpack $url" >&2; exit 1; }
  chown -R "$owner" "$tmp.d"
  for f in "$tmp.d"/* "$tmp.d"/.[!.]*; do
    [ -e "$f" ] || continue
    if [ -f "$f" ]; then chmod "$mode" "$f"; fi
    b="$(basename "$f")"; rm -rf "$dir/$b.spectra-old"
    if [ -d "$f" ] && [ -e "$dir/$b" ]; then mv "$dir/$b" "$dir/$b.spectra-old"; fi
    mv -f "$f" "$dir/$b"; rm -rf "$dir/$b.spectra-old"
  done
  mkdir -p "$(dirname "$stamp")"; printf '%s -\n' "$want" > "$stamp.new"; mv -f "$stamp.new" "$stamp"
else
  mkdir "$tmp.d"
  tar -xf "$tmp" -C "$tmp.d" --no-same-owner "$member" \
    || { echo "member $member not found in $url" >&2; exit 1; }
  mv -f "$tmp.d/$member" "$tmp.new"; chown "$owner" "$tmp.new"; chmod "$mode" "$tmp.new"
  installed="$(sha256sum "$tmp.new" | cut -d' ' -f1)"
  mv -f "$tmp.new" "$dest"
  mkdir -p "$(dirname "$stamp")"
  printf '%s %s %s\n' "$want" "$installed" "$(stat -c '%s %.9Y %.9Z %i' "$dest")" > "$stamp.new"
  mv -f "$stamp.new" "$stamp"
fi
"""


# After a chmod/chown of an installed file (which moves its ctime): record its new stat in the stamp.
# $1 dest, $2 stamp, $3 archive sha256, $4 installed sha256 (both as the stamp had them)
_RESTAMP_SCRIPT = (
    'printf \'%s %s %s\\n\' "$3" "$4" "$(stat -c \'%s %.9Y %.9Z %i\' "$1")" > "$2.new" && mv -f "$2.new" "$2"'
)


def stamp_path(dest: str, stamp_dir: str = STAMP_DIR) -> str:
    """Where what was installed at ``dest`` is recorded (sums, then the installed file's stat).

    ``/usr/local/bin/x`` -> ``/var/lib/spectra-infra/downloads/usr_local_bin_x.sha256``
    """
    return posixpath.join(stamp_dir, dest.strip("/").replace("/", "_") + ".sha256")


def download_paths(dest: str, extract: str | None = None, stamp_dir: str = STAMP_DIR) -> list[str]:
    """The paths a download's no-op check reads: add them to a component's ``snapshot_files``, with the
    stamp (the second path) in ``contents`` and :func:`download_stat_only` in ``stat_only``."""
    return [dest, stamp_path(dest, stamp_dir)]


def download_stat_only(dest: str, extract: str | None = None, verify: bool = False) -> list[str]:
    """The paths of a download that the snapshot must not hash (the installed file; none with verify)."""
    return [] if verify or extract == "." else [dest]


def _stat(state: FileState) -> list[str]:
    return [str(state.get("size")), str(state.get("mtime")), str(state.get("ctime")), str(state.get("inode"))]


def _recorded(sha256: str, stamp_state: FileState | None) -> list[str] | None:
    """The stamp's fields when it records ``sha256`` as what was installed, else None."""
    recorded = ((stamp_state or {}).get("content") or "").split()
    return recorded if len(recorded) >= 2 and recorded[0] == sha256 else None


def _is_up_to_date(
    sha256: str,
    extract: str | None,
    dest_state: FileState | None,
    stamp_state: FileState | None,
) -> bool:
    """Installed from ``sha256`` and untouched since: by the stamp and the installed file's stat.

    When the snapshot hashed the installed file (``verify``), that sum must match the stamp as well.
    """
    recorded = _recorded(sha256, stamp_state)
    if dest_state is None or recorded is None:
        return False
    if extract == ".":
        return dest_state.get("type") == "directory"
    if dest_state.get("type") != "file" or len(recorded) != 6 or recorded[2:] != _stat(dest_state):
        return False
    digest = dest_state.get("sha256")
    return digest is None or digest == recorded[1]


@operation()
def download(
    url: str,
    dest: str,
    sha256: str,
    mode: int | str = "0755",
    user: str = "root",
    group: str = "root",
    extract: str | None = None,
    strip_components: int = 0,
    connect_timeout: int = 10,
    max_time: int = 600,
    stamp_dir: str = STAMP_DIR,
    current: Any = None,
    verify: bool = False,
):
    """
    Install ``url`` at ``dest`` once its sha256 is ``sha256``.

    + url: where to fetch (any mirror laid out like upstream)
    + dest: the installed file; with ``extract="."`` the directory to unpack into
    + sha256: the published sha256 of what ``url`` serves (the archive, for tarballs)
    + mode/user/group: of the installed file(s)
    + extract: member path inside the tarball to install as ``dest``
      (``"node_exporter-1.8.2.linux-amd64/node_exporter"``), or ``"."`` for the whole archive
    + strip_components: with ``extract="."``, leading path parts to drop (``tar --strip-components``)
    + connect_timeout/max_time: seconds for curl (fail fast on an unreachable mirror)
    + current: a ``FileStates`` snapshot with ``download_paths(dest, extract)`` (stamp content
      included, ``download_stat_only`` not hashed) to decide without a remote command
    + verify: also hash the installed file when this operation reads its own state (``current`` not
      given), and require that sum to match the stamp
    """
    sha256 = sha256.strip().lower()
    if not _SHA256.match(sha256):
        raise OperationValueError(f"download of {url}: sha256 must be 64 hex digits, got {sha256!r}")
    if extract is not None and (not extract or extract.startswith("/") or ".." in extract.split("/")):
        raise OperationValueError(f"download of {url}: bad member to extract: {extract!r}")
    wanted_mode = normalise_mode(mode)
    stamp = stamp_path(dest, stamp_dir)

    if current is None:
        paths = download_paths(dest, extract, stamp_dir)
        current = host.get_fact(
            FileStates, paths=paths, contents=paths[1:], stat_only=download_stat_only(dest, extract, verify)
        )
    dest_state = current.get(dest)
    stamp_state = current.get(stamp)

    if _is_up_to_date(sha256, extract, dest_state, stamp_state):
        diff = {} if extract == "." else state_matches(dest_state, mode=wanted_mode, user=user, group=group)
        if not diff:
            host.noop(f"{dest} already installed from {url} (sha256 {sha256[:12]})")
            return
        if "user" in diff or "group" in diff:
            yield StringCommand(
                "chown", StringCommand(QuoteString(user), ":", QuoteString(group), _separator=""),
                QuoteString(dest),
            )  # fmt: skip
        if "mode" in diff:
            yield StringCommand("chmod", wanted_mode, QuoteString(dest))
        recorded = _recorded(sha256, stamp_state) or [sha256, "-"]
        # chown/chmod moved the file's ctime: record the new stat, or the next run would reinstall
        yield StringCommand(
            "sh", "-c", QuoteString(_RESTAMP_SCRIPT), "spectra-restamp",
            QuoteString(dest), QuoteString(stamp), recorded[0], recorded[1],
        )  # fmt: skip
        return

    yield StringCommand(
        "sh",
        "-c",
        QuoteString(_SCRIPT),
        "spectra-download",
        QuoteString(url),
        QuoteString(dest),
        sha256,
        wanted_mode,
        StringCommand(QuoteString(user), ":", QuoteString(group), _separator=""),
        QuoteString("" if extract is None else extract),
        str(int(strip_components)),
        QuoteString(stamp),
        str(int(connect_timeout)),
        str(int(max_time)),
    )
