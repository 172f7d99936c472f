import pytest

from facts.platform import Platform

pytestmark = pytest.mark.unit

BOOKWORM = [
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"',
    'NAME="Debian GNU/Linux"',
    'VERSION_ID="12"',
    "VERSION_CODENAME=bookworm",
    "ID=debian",
    "SPECTRA_MACHINE=x86_64",
    "SPECTRA_KERNEL=6.1.0-18-amd64",
    "SPECTRA_DPKG_ARCH=amd64",
]


def test_debian_12_amd64() -> None:
    platform = Platform().process(BOOKWORM)
    assert platform["id"] == "debian"
    assert platform["version_id"] == "12"
    assert platform["codename"] == "bookworm"
    assert platform["arch"] == "amd64"
    assert platform["kernel"] == "6.1.0-18-amd64"


def test_arm64_and_trixie() -> None:
    lines = ["ID=debian", 'VERSION_ID="13"', "VERSION_CODENAME=trixie", "SPECTRA_MACHINE=aarch64"]
    platform = Platform().process(lines)
    assert (platform["version_id"], platform["arch"], platform["dpkg_arch"]) == ("13", "arm64", None)


def test_no_os_release() -> None:
    platform = Platform().process(["SPECTRA_MACHINE=x86_64", "SPECTRA_KERNEL=6.1", "SPECTRA_DPKG_ARCH="])
    assert platform["id"] is None and platform["version_id"] is None and platform["dpkg_arch"] is None


def test_default_empty() -> None:
    assert Platform.default() == {}
