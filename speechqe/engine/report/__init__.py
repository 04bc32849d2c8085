"""Reports: a self-contained HTML report per run, and the history dashboard.

``data`` gathers what a report shows from the store, ``render`` turns it into pages with the
Jinja2 templates of ``templates/`` (autoescaped), ``server`` serves the dashboard, and
``worddiff`` aligns transcripts. :func:`write_report` is what ``speechqe report``, the
evaluation flow and ``make demo`` call.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from speechqe.engine.history import RegressionPolicy


def write_report(
    store,
    run_id: str = "latest",
    out: str | Path | None = None,
    *,
    baseline: str | None = "auto",
    policy: "RegressionPolicy | None" = None,
    n_worst: int = 5,
    trend_limit: int = 20,
    embed_audio_mb: float = 40.0,
) -> tuple[Path, Any]:
    """Write the HTML report of a run (default path: beside the store,
    ``reports/<run id>.html``). Returns the path and the :class:`~.data.ReportData`.

    The file is self-contained (plotly.js inline, audio of the listed utterances embedded up to
    ``embed_audio_mb``), written atomically.
    """
    from speechqe.engine.report.data import gather
    from speechqe.engine.report.render import Assets, render_run_report

    data = gather(store, run_id, baseline=baseline, policy=policy, n_worst=n_worst,
                  trend_limit=trend_limit)
    if out is None:
        out = Path(store.path).parent / "reports" / f"{data.run['run_id']}.html"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = render_run_report(data, Assets(audio_budget_bytes=int(embed_audio_mb * (1 << 20))))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(out)
    return out, data
