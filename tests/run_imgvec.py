"""Run the real imgvec CLI in a subprocess with the test model registered (for kill tests).

With ``IMGVEC_TEST_MAXRSS_FILE`` set, the process writes its peak resident memory (KiB, from
``getrusage``) to that file when it exits; with ``IMGVEC_TEST_MODULES_FILE``, the names of the
modules it imported, one per line; with ``IMGVEC_TEST_KILL_AT=module:qualname``, it kills itself
(SIGKILL) when it first calls that function.
"""

import atexit
import os
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tests.fake_model  # noqa: F401
from imgvec.cli.app import main


def _write_peak_memory(path: str) -> None:
    """This process's own peak (KiB): VmHWM, not ``ru_maxrss``, which Linux carries over from
    the parent at fork (a pytest process that loaded big models would count as this one's)."""
    try:
        with open("/proc/self/status") as status:
            peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        peak = str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    Path(path).write_text(peak)


def _write_modules(path: str) -> None:
    Path(path).write_text("\n".join(sorted(sys.modules)))


def _kill_at(where: str) -> None:
    """SIGKILL this process when it first calls ``where`` (``module:Class.method`` or
    ``module:function``): a crash at exactly that point."""
    import importlib
    import signal

    module_name, _, qualname = where.partition(":")
    owner = importlib.import_module(module_name)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)

    def killing(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(owner, name, killing)


if __name__ == "__main__":
    if where := os.environ.get("IMGVEC_TEST_KILL_AT"):
        _kill_at(where)
    if report := os.environ.get("IMGVEC_TEST_MAXRSS_FILE"):
        atexit.register(_write_peak_memory, report)
    if listing := os.environ.get("IMGVEC_TEST_MODULES_FILE"):
        atexit.register(_write_modules, listing)
    main()
