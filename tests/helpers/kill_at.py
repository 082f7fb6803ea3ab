"""Run the mmue CLI and SIGKILL it at the Nth call of one function: a real kill -9 at a chosen point, with no
test hook in the library.

    python tests/helpers/kill_at.py MODULE:ATTR N -- mmue CLI arguments...

``MODULE:ATTR`` is what gets wrapped, e.g. ``mmue.protect.engine:clip_train_step`` (a surrogate step) or
``mmue.protect.engine:MEMEngine.image_step`` (a batch of the data pass).
"""
import importlib
import os
import signal
import sys


def main() -> None:
    target, n = sys.argv[1], int(sys.argv[2])
    args = sys.argv[sys.argv.index("--") + 1:]
    module_name, attr = target.split(":")
    owner = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for p in path:
        owner = getattr(owner, p)
    original, calls = getattr(owner, name), [0]

    def wrapped(*a, **kw):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*a, **kw)
    setattr(owner, name, wrapped)
    from mmue.cli import main as cli
    sys.exit(cli(args))


if __name__ == "__main__":
    main()
