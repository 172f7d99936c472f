"""SSH server baseline, on sshd's effective configuration (``sshd -T``: the result of every file and
Include), so a drop-in anywhere that loosens a setting is caught."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from compliance.model import Check, Outcome, check, failed, passed
from compliance.probe import Probe

SECTION = "ssh"
SECTION_TITLE = "SSH server baseline"

_SSH_FIX = "converge ssh_hardening (drop-in /etc/ssh/sshd_config.d/00-spectra-hardening.conf, then reload ssh)"

WEAK_KEX = ("sha1", "group1-", "nistp")
WEAK_CIPHERS = ("-cbc", "3des", "arcfour", "blowfish", "cast128", "rijndael")
WEAK_MACS = ("sha1", "md5", "umac-64", "ripemd")
# Hybrid key exchanges with a post-quantum part (OpenSSH 8.5+ sntrup761, 9.9+ ML-KEM)
POST_QUANTUM_KEX = ("sntrup761x25519-sha512@openssh.com", "sntrup761x25519-sha512", "mlkem768x25519-sha256")
# A host key file named like one of these holds an ECDSA (NIST curve) or DSA key: Debian's names
WEAK_HOST_KEYS = ("ecdsa", "dsa")


def weak_algorithms(value: str, patterns: tuple[str, ...]) -> list[str]:
    return [algorithm for algorithm in value.split(",") if any(p in algorithm.lower() for p in patterns)]


def evaluate_algorithms(settings: Mapping[str, str], keyword: str, patterns: tuple[str, ...]) -> Outcome:
    value = settings.get(keyword)
    if value is None:
        return failed(f"sshd -T prints no {keyword}")
    weak = weak_algorithms(value, patterns)
    if weak:
        return failed(f"{keyword} offers {', '.join(weak)}")
    return passed(f"{keyword} {value}")


def evaluate_sshd_setting(settings: Mapping[str, str], keyword: str, allowed: tuple[str, ...]) -> Outcome:
    value = settings.get(keyword)
    if value is None:
        return failed(f"sshd -T prints no {keyword}")
    if value not in allowed:
        return failed(f"{keyword} {value} (want {' or '.join(allowed)})")
    return passed(f"{keyword} {value}")


@dataclass(frozen=True, eq=False)
class NoWeakAlgorithms:
    keyword: str  # as sshd -T prints it: kexalgorithms, ciphers, macs
    patterns: tuple[str, ...]  # an algorithm containing one of these is weak

    def __call__(self, probe: Probe) -> Outcome:
        return evaluate_algorithms(probe.sshd(), self.keyword, self.patterns)


@dataclass(frozen=True, eq=False)
class SshdSettings:
    """keyword -> allowed values; every keyword must have one of them."""

    allowed: Mapping[str, tuple[str, ...]]

    def __call__(self, probe: Probe) -> Outcome:
        settings = probe.sshd()
        outcomes = [evaluate_sshd_setting(settings, key, values) for key, values in self.allowed.items()]
        bad = [outcome.reason for outcome in outcomes if outcome.status == "fail"]
        return failed("; ".join(bad)) if bad else passed("; ".join(outcome.reason for outcome in outcomes))


MAX_AUTH_TRIES = 4


@check(
    id="SPX-SSH-008",
    section=SECTION,
    title=f"At most {MAX_AUTH_TRIES} authentication attempts per connection (MaxAuthTries <= {MAX_AUTH_TRIES})",
    rationale="slows down online guessing",
    fix=_SSH_FIX,
)
def max_auth_tries(probe: Probe) -> Outcome:
    value = probe.sshd().get("maxauthtries", "")
    if not value.isdigit():
        return failed(f"maxauthtries {value or 'missing'}")
    if int(value) > MAX_AUTH_TRIES:
        return failed(f"maxauthtries {value} (want {MAX_AUTH_TRIES} or less)")
    return passed(f"maxauthtries {value}")


@check(
    id="SPX-SSH-011",
    section=SECTION,
    title="A post-quantum hybrid key exchange is offered (sntrup761x25519 or mlkem768x25519)",
    rationale="traffic recorded today must not be decryptable by a future quantum computer",
    fix=_SSH_FIX,
)
def post_quantum_kex(probe: Probe) -> Outcome:
    value = probe.sshd().get("kexalgorithms")
    if value is None:
        return failed("sshd -T prints no kexalgorithms")
    offered = [name for name in value.split(",") if name in POST_QUANTUM_KEX]
    if not offered:
        return failed(f"kexalgorithms {value} has none of {', '.join(POST_QUANTUM_KEX)}")
    return passed(f"kexalgorithms offers {', '.join(offered)}")


@check(
    id="SPX-SSH-012",
    section=SECTION,
    title="No ECDSA or DSA host key is served (HostKey)",
    rationale="ECDSA host keys use NIST curves whose constants are distrusted, and a weak random number "
    "generator at signing time reveals the key; DSA is broken",
    fix=_SSH_FIX,
)
def host_keys(probe: Probe) -> Outcome:
    value = probe.sshd().get("hostkey")
    if not value:
        return failed("sshd -T prints no hostkey")
    keys = value.split(",")
    weak = [key for key in keys if any(p in key.rsplit("/", 1)[-1].lower() for p in WEAK_HOST_KEYS)]
    if weak:
        return failed(f"hostkey {', '.join(weak)} is served")
    return passed(f"hostkey {', '.join(keys)}")


CHECKS: tuple[Check, ...] = (
    Check(
        id="SPX-SSH-001",
        section=SECTION,
        title="No weak key exchange (no SHA-1 or group1/group14-sha1/group-exchange-sha1, no nistp curves)",
        rationale="SHA-1 and small/NIST-curve key exchanges are deprecated or distrusted",
        fix=_SSH_FIX,
        evaluate=NoWeakAlgorithms("kexalgorithms", WEAK_KEX),
    ),
    Check(
        id="SPX-SSH-002",
        section=SECTION,
        title="No weak ciphers (no CBC modes, 3DES, arcfour, blowfish, cast128)",
        rationale="CBC modes are open to plaintext recovery; the others are broken",
        fix=_SSH_FIX,
        evaluate=NoWeakAlgorithms("ciphers", WEAK_CIPHERS),
    ),
    Check(
        id="SPX-SSH-003",
        section=SECTION,
        title="No weak MACs (no SHA-1, MD5, umac-64, ripemd160)",
        rationale="SHA-1/MD5 based MACs and 64-bit tags are deprecated",
        fix=_SSH_FIX,
        evaluate=NoWeakAlgorithms("macs", WEAK_MACS),
    ),
    Check(
        id="SPX-SSH-004",
        section=SECTION,
        title="Password authentication is off (PasswordAuthentication no)",
        rationale="keys only: passwords can be guessed and phished",
        fix=_SSH_FIX,
        evaluate=SshdSettings({"passwordauthentication": ("no",)}),
    ),
    Check(
        id="SPX-SSH-005",
        section=SECTION,
        title="Keyboard-interactive authentication is off (KbdInteractiveAuthentication no)",
        rationale="keyboard-interactive is password authentication by another name (PAM)",
        fix=_SSH_FIX,
        evaluate=SshdSettings({"kbdinteractiveauthentication": ("no",)}),
    ),
    Check(
        id="SPX-SSH-006",
        section=SECTION,
        title="Root logs in with keys only or not at all (PermitRootLogin prohibit-password or no)",
        rationale="a root password over SSH is the first thing attackers try",
        fix=_SSH_FIX,
        evaluate=SshdSettings({"permitrootlogin": ("prohibit-password", "without-password", "no")}),
    ),
    Check(
        id="SPX-SSH-007",
        section=SECTION,
        title="Empty passwords are refused (PermitEmptyPasswords no)",
        rationale="an account without a password must not be an open door",
        fix=_SSH_FIX,
        evaluate=SshdSettings({"permitemptypasswords": ("no",)}),
    ),
    max_auth_tries,
    Check(
        id="SPX-SSH-009",
        section=SECTION,
        title="X11 forwarding is off (X11Forwarding no)",
        rationale="servers have no display; forwarding exposes the client's X server",
        fix=_SSH_FIX,
        evaluate=SshdSettings({"x11forwarding": ("no",)}),
    ),
    Check(
        id="SPX-SSH-010",
        section=SECTION,
        title="Host-based authentication is off and rhosts files are ignored",
        rationale="trust by source host name is spoofable (HostbasedAuthentication no, IgnoreRhosts yes)",
        fix=_SSH_FIX,
        evaluate=SshdSettings({"hostbasedauthentication": ("no",), "ignorerhosts": ("yes",)}),
    ),
    post_quantum_kex,
    host_keys,
    Check(
        id="SPX-SSH-013",
        section=SECTION,
        title="Compression is off (Compression no)",
        rationale="compressing before encrypting leaks plaintext lengths and adds zlib to the attack surface",
        fix=_SSH_FIX,
        evaluate=SshdSettings({"compression": ("no",)}),
    ),
)
