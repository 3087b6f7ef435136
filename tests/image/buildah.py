"""The image as the smoke test uses it: built by image/build.sh, run with buildah.

`buildah run --isolation chroot` shares the host's network (the services listen on
host loopback) and has no option for a read-only root: `ImageContainer.command` makes
one the way a pod's `readOnlyRootFilesystem` does, and drops to the image's own user,
as a pod's `runAsUser` would. See image/README.md.
"""

from __future__ import annotations

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
