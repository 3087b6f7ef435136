"""The image as the smoke test uses it: built by image/build.sh, run with buildah.

`buildah run --isolation chroot` shares the host's network (the services listen on
host loopback) and has no option for a read-only root: `ImageContainer.command` makes
one the way a pod's `readOnlyRootFilesystem` does, and drops to the image's own user,
as a pod's `runAsUser` would. See image/README.md.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.localmesh.edge import REPO_ROOT

BUILD_SCRIPT = REPO_ROOT / "image" / "build.sh"
# From nothing (debootstrap, the wheelhouse, every layer) it takes a few minutes.
BUILD_TIMEOUT = 1800.0
COMMAND_TIMEOUT = 120.0

# Run as root inside the container only to remount its root read-only, then become
# the image's user with no capabilities left and no way to gain any.
_READ_ONLY_THEN_USER = (
    'uid=$1 gid=$2; shift 2; mount -o remount,bind,ro / && exec setpriv --reuid "$uid" '
    '--regid "$gid" --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"'
)


class ImageError(RuntimeError):
    """The image could not be built, inspected or run."""


def build_image() -> str:
    """Build (or bring up to date, from the caches) the image; returns its reference."""
    result = subprocess.run(
        [str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise ImageError(f"image/build.sh failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout.strip().splitlines()[-1]


def buildah(*args: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run `buildah <args>`; its standard output, or ImageError with its error output."""
    result = subprocess.run(
        ["buildah", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise ImageError(f"buildah {shlex.join(args)} failed:\n{result.stderr[-4000:]}")
    return result.stdout


@dataclass(frozen=True)
class ImageConfig:
    """The parts of the image's OCI configuration the test checks."""

    user: str
    entrypoint: tuple[str, ...]
    labels: Mapping[str, str]

    @classmethod
    def of(cls, reference: str) -> ImageConfig:
        inspected = json.loads(buildah("inspect", "--type", "image", reference))
        config = inspected["OCIv1"]["config"]
        return cls(
            user=config.get("User", ""),
            entrypoint=tuple(config.get("Entrypoint") or ()),
            labels=dict(config.get("Labels") or {}),
        )


@dataclass(frozen=True)
class Mount:
    """A host folder seen at `target` inside the container, read-only."""

    source: Path
    target: str


class ImageContainer:
    """A working container of the image (`buildah from`), removed by `remove()`."""

    def __init__(self, reference: str, name: str) -> None:
        self.name = buildah("from", "--pull-never", "--name", name, reference).strip()

    def command(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[Mount] = (),
        read_only_as: str | None = None,
    ) -> list[str]:
        """The `buildah run` command line of `args` in this container: host network,
        an empty writable /tmp (a pod's emptyDir), and `env` and `mounts` added.

        With `read_only_as` ("uid:gid"), the root filesystem is read-only and `args`
        runs as that user; without, as the image's own user on a writable root.
        """
        run = ["buildah", "run", "--isolation", "chroot", "--network", "host"]
        run += ["--mount", "type=tmpfs,destination=/tmp"]
        for mount in mounts:
            run += ["--volume", f"{mount.source}:{mount.target}:ro"]
        for name, value in (env or {}).items():
            run += ["--env", f"{name}={value}"]
        if read_only_as is None:
            return [*run, self.name, "--", *args]
        uid, _, gid = read_only_as.partition(":")
        run += ["--user", "0:0", "--cap-add", "CAP_SYS_ADMIN"]
        return [*run, self.name, "--", "sh", "-c", _READ_ONLY_THEN_USER, "sh", uid, gid, *args]

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[Mount] = (),
        read_only_as: str | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run `args` to completion (see `command`); never raises on a non-zero exit."""
        return subprocess.run(
            self.command(*args, env=env, mounts=mounts, read_only_as=read_only_as),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def remove(self) -> None:
        buildah("rm", self.name)


@dataclass(frozen=True)
class ContainedProcess:
    """The program a `buildah run` runs, seen from the host (no pid namespace)."""

    pid: int

    @classmethod
    def under(cls, buildah_pid: int) -> ContainedProcess:
        """The last process of the chain that `buildah run` started (buildah's chroot
        helper, then the program, each exec'ing the next): the one without children."""
        pid = buildah_pid
        while children := _children(pid):
            if len(children) != 1:
                raise ImageError(f"process {pid} has several children: {children}")
            pid = children[0]
        if pid == buildah_pid:
            raise ImageError(f"buildah ({buildah_pid}) has not started its program yet")
        return cls(pid)

    @property
    def command_line(self) -> list[str]:
        raw = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        return raw.decode(errors="replace").rstrip("\0").split("\0")

    @property
    def ids(self) -> tuple[set[int], set[int]]:
        """The real, effective, saved and file-system uids, and the same gids."""
        fields = {
            line.split(":")[0]: line.split(":")[1].split()
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines()
            if line.startswith(("Uid:", "Gid:"))
        }
        return {int(uid) for uid in fields["Uid"]}, {int(gid) for gid in fields["Gid"]}

    @property
    def effective_capabilities(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
        raise ImageError(f"no CapEff in /proc/{self.pid}/status")

    @property
    def root_mount_options(self) -> set[str]:
        """The per-mount options of its root (/proc/<pid>/mountinfo, field 6)."""
        for line in Path(f"/proc/{self.pid}/mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[4] == "/":
                return set(fields[5].split(","))
        raise ImageError(f"no root mount in /proc/{self.pid}/mountinfo")


def _children(pid: int) -> list[int]:
    """Children of every thread of `pid` (Go's, buildah's, fork from any thread)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(FileNotFoundError):
            children += [int(child) for child in (task / "children").read_text().split()]
    return sorted(children)
