"""Plaintext credentials in the repository's files: what must never be committed, and the reviewed exceptions.

Every file git tracks or would add (``git ls-files --cached --others --exclude-standard``, read-only) is read
as text and matched against :data:`PATTERNS` (private keys, cloud and chat tokens, webhook URLs, URLs with a
password, password hashes). In group data and inventories (``group_data/``, ``inventories/``, Python or YAML)
a key named like a password, token or secret that is given a non-empty string literal is a finding too: those
values belong in ``spectra.secrets.from_env``/``from_file`` references. ``scan/secrets_allowlist.yaml`` lists
the exceptions, each a path glob, the pattern's name and the reason (test fixtures, documentation examples).
"""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
ALLOWLIST = REPO / "scan" / "secrets_allowlist.yaml"
MAX_BYTES = 2_000_000  # larger files are data, not configuration
DATA_DIRS = ("group_data/", "inventories/")  # where a password-like key must not hold a literal


@dataclass(frozen=True)
class Pattern:
    name: str
    regex: re.Pattern[str]
    what: str


def _p(name: str, regex: str, what: str, flags: int = 0) -> Pattern:
    return Pattern(name, re.compile(regex, flags), what)


PATTERNS: tuple[Pattern, ...] = (
    # the header with a key after it: code that only names the header (a prefix check) is no key
    _p(
        "private-key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:\\n|\s)+(?:[\w-]+: [^\n]*\s+)*"
        r"[A-Za-z0-9+/=]{40,}",
        "a PEM/OpenSSH/PGP private key",
    ),  # fmt: skip
    _p("aws-access-key-id", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b", "an AWS access key id"),
    _p(
        "aws-secret-access-key",
        r"(?i)aws_?secret_?access_?key['\"]?\s*[:=]\s*['\"]?[A-Za-z0-9/+]{40}\b",
        "an AWS secret access key",
    ),  # fmt: skip
    _p("slack-token", r"\bxox[abposr]-[0-9A-Za-z-]{10,}", "a Slack token"),
    _p(
        "slack-webhook",
        r"https://hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/+-]{16,}",
        "a Slack incoming webhook URL",
    ),  # fmt: skip
    _p("discord-webhook", r"https://(?:\w+\.)?discord(?:app)?\.com/api/webhooks/\d+/[\w-]{20,}", "a Discord webhook"),
    _p("teams-webhook", r"https://[\w-]+\.webhook\.office\.com/webhook\w*/[\w@/-]{20,}", "a Microsoft Teams webhook"),
    _p("github-token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})", "a GitHub token"),
    _p("gitlab-token", r"\bglpat-[A-Za-z0-9_-]{20,}", "a GitLab token"),
    _p("google-api-key", r"\bAIza[0-9A-Za-z_-]{35}\b", "a Google API key"),
    _p(
        "url-credentials",
        r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"<>{}$]+:[^/\s@'\"<>{}$]+@[\w.-]+",
        "a URL with user:password@",
    ),  # fmt: skip
    _p("bcrypt-hash", r"\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}", "a bcrypt hash (htpasswd, basic auth)"),
    _p("apr1-hash", r"\$apr1\$[./A-Za-z0-9]{1,8}\$[./A-Za-z0-9]{22}", "an Apache MD5 (htpasswd) hash"),
    _p("sha-crypt-hash", r"\$[56]\$(?:rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{43,86}", "a SHA-crypt hash"),
    _p("htpasswd-sha", r"\{SHA\}[A-Za-z0-9+/]{27}=", "an htpasswd {SHA} hash"),
)
CREDENTIAL_KEY = re.compile(r"(?i)(pass(word|wd|phrase)?|secret|token|api_?key|private_?key|credentials?|auth_?key)$")
LITERAL_NAME = "credential-literal"


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    pattern: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what} ({self.pattern})"


@dataclass(frozen=True)
class Allowed:
    path: str  # a glob, matched against the repository-relative path
    pattern: str
    reason: str

    def covers(self, finding: Finding) -> bool:
        return self.pattern == finding.pattern and fnmatch.fnmatchcase(finding.path, self.path)


class AllowlistError(ValueError):
    """An allowlist entry without its path, a known pattern, or a reason."""


def load_allowlist(path: Path = ALLOWLIST) -> list[Allowed]:
    names = {pattern.name for pattern in PATTERNS} | {LITERAL_NAME}
    entries = yaml.safe_load(path.read_text()) or []
    found = []
    for index, entry in enumerate(entries):
        values = [entry.get(key) for key in ("path", "pattern", "reason")] if isinstance(entry, dict) else []
        texts = [value.strip() for value in values if isinstance(value, str) and value.strip()]
        if len(texts) != 3:
            raise AllowlistError(f"{path.name}[{index}]: needs path, pattern and reason (non-empty strings)")
        glob, pattern, reason = texts
        if pattern not in names:
            raise AllowlistError(f"{path.name}[{index}]: unknown pattern {pattern!r}; known: {sorted(names)}")
        found.append(Allowed(glob, pattern, reason))
    return found


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _python_literals(path: str, text: str) -> Iterable[Finding]:
    """``password = "x"``, ``{"auth_password": "x"}`` and ``f(token="x")`` with a non-empty literal."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return
    for node in ast.walk(tree):
        pairs: list[tuple[str, ast.expr | None]] = []
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            pairs += [(target.id, node.value) for target in targets if isinstance(target, ast.Name)]
        elif isinstance(node, ast.Dict):
            pairs += [
                (key.value, value)
                for key, value in zip(node.keys, node.values, strict=True)
                if isinstance(key, ast.Constant) and isinstance(key.value, str)
            ]
        elif isinstance(node, ast.keyword) and node.arg:
            pairs.append((node.arg, node.value))
        for name, value in pairs:
            literal = isinstance(value, ast.Constant) and isinstance(value.value, str) and value.value.strip()
            if literal and value is not None and CREDENTIAL_KEY.search(name):
                yield Finding(path, value.lineno, LITERAL_NAME, f"{name} given a literal string")


_YAML_LITERAL = re.compile(r"""^\s*-?\s*['"]?([\w.-]+)['"]?\s*:\s*(['"]?)(?P<value>[^'"#\s][^#\n]*?)\2\s*(#.*)?$""")


def _yaml_literals(path: str, text: str) -> Iterable[Finding]:
    for number, line in enumerate(text.splitlines(), start=1):
        match = _YAML_LITERAL.match(line)
        if match and CREDENTIAL_KEY.search(match.group(1)) and match.group("value") not in ("null", "~", "''", '""'):
            yield Finding(path, number, LITERAL_NAME, f"{match.group(1)} given a literal string")


def scan_text(path: str, text: str) -> list[Finding]:
    """The findings in one file's text (``path`` relative to the repository, for the data-directory rule)."""
    found = [
        Finding(path, _line(text, match.start()), pattern.name, pattern.what)
        for pattern in PATTERNS
        for match in pattern.regex.finditer(text)
    ]
    if path.startswith(DATA_DIRS):
        if path.endswith(".py"):
            found += _python_literals(path, text)
        elif path.endswith((".yaml", ".yml", ".json")):
            found += _yaml_literals(path, text)
    return sorted(set(found))


def repository_files(repo: Path = REPO) -> list[str]:
    """Tracked files and the untracked ones git would add (ignored ones left out), relative paths."""
    done = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return sorted({name for name in done.stdout.split("\0") if name})


def scan_repository(repo: Path = REPO, files: Sequence[str] | None = None) -> list[Finding]:
    found: list[Finding] = []
    for name in files if files is not None else repository_files(repo):
        path = repo / name
        try:
            if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_BYTES:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if b"\0" in data[:8192]:
            continue  # binary
        found += scan_text(name, data.decode("utf-8", errors="replace"))
    return found


def unallowed(findings: Iterable[Finding], allowlist: Sequence[Allowed]) -> list[Finding]:
    return [finding for finding in findings if not any(entry.covers(finding) for entry in allowlist)]


def unused(findings: Iterable[Finding], allowlist: Sequence[Allowed]) -> list[Allowed]:
    """Allowlist entries that cover no finding (stale: remove them)."""
    found = list(findings)
    return [entry for entry in allowlist if not any(entry.covers(finding) for finding in found)]
