"""`python -m statestore_testing.control_plane up|down|status` (the Makefile's `cluster` and
`cluster-down` targets): a control plane for local runs, in `.cluster/` of the current directory.

    up      writes <dir>/kubeconfig, returns once /readyz is ok (and the controller-manager works)
    down    stops what `up` started and removes <dir>'s data
    status  exits 0 when it is up and ready
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from statestore_testing.control_plane.cluster import ControlPlane, ControlPlaneError

DEFAULT_DIR = Path(".cluster")


def _cmd_up(args: argparse.Namespace) -> int:
    workdir: Path = args.dir
    if (workdir / "state.json").exists():
        existing = ControlPlane.attach(workdir)
        if existing.running() and existing.is_ready():
            print(f"already running: {existing.server}\nexport KUBECONFIG={existing.kubeconfig}")
            return 0
        existing.stop()  # stale leftovers of a crashed run
    workdir.mkdir(parents=True, exist_ok=True)
    cp = ControlPlane(workdir, kwok=args.kwok, die_with_parent=False)
    started = time.monotonic()
    cp.start(timeout=args.timeout, wait_for_controllers=not args.no_wait_controllers)
    elapsed = time.monotonic() - started
    print(
        f"Kubernetes v{cp.version} control plane ready at {cp.server} in {elapsed:.1f}s "
        f"({', '.join(cp.running())})\n"
        f"logs: {cp.logs_dir}\n"
        f"export KUBECONFIG={cp.kubeconfig}"
    )
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    workdir: Path = args.dir
    if not (workdir / "state.json").exists():
        print(f"nothing to stop in {workdir}")
        return 0
    cp = ControlPlane.attach(workdir)
    names = cp.running()
    cp.stop()
    with contextlib.suppress(OSError):
        workdir.rmdir()  # only if nothing else lives there
    print(f"stopped: {', '.join(names) or 'nothing was running'}; removed data in {workdir}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    workdir: Path = args.dir
    if not (workdir / "state.json").exists():
        print("not running")
        return 1
    cp = ControlPlane.attach(workdir)
    ready = cp.is_ready()
    print(f"{cp.server} ready={ready} running={','.join(cp.running())}")
    return 0 if ready else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="work directory (default: .cluster)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the control plane and write <dir>/kubeconfig")
    up.add_argument(
        "--kwok",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run kube-scheduler and kwok, so Pods run on a fake node (default: on)",
    )
    up.add_argument("--timeout", type=float, default=120.0)
    up.add_argument(
        "--no-wait-controllers",
        action="store_true",
        help="return at /readyz, before controller-manager works",
    )
    up.set_defaults(func=_cmd_up)
    sub.add_parser("down", help="stop it and remove its data").set_defaults(func=_cmd_down)
    sub.add_parser("status", help="exit 0 if it is running and ready").set_defaults(func=_cmd_status)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ControlPlaneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
