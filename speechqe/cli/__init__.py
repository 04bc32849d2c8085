"""Layer L3, the command line: every typer app of ``speechqe`` lives in this package
(``main``: the root app, ``score`` and the store commands; ``models``, ``report``, ``flows``,
``mos``, ``vocoders``: their sub-apps; ``common``: consoles, option parsing, the summary
table). Commands call the engine (L2) and the domain libraries; they compute nothing
themselves."""


def main() -> None:
    """The ``speechqe`` console script: every error ends in an exit status and one
    ``error:`` line (see :func:`speechqe.cli.common.run`)."""
    import sys

    from .common import run
    from .main import app

    sys.exit(run(app))
