"""The ``train-mos-predictor`` flow: orchestration only.

    load-config -> check-bundle -> train (GPU-tagged) -> validate (GPU-tagged, with a
    ``valid:`` set) -> publish-artifacts

Every step is one call into :mod:`speechqe.predictors.train`; the policy sits on the
decorators, as in :mod:`speechqe.flows.evaluate`:

* Reading the config and checking the output folder are I/O tasks that retry (never on a
  :class:`~speechqe.errors.ConfigError`: a bad config fails the same way again).
* Training and validation do not retry: a failure there is a bug or an exhausted device, and
  the library's own checkpoints (strong learners, ``.<bundle>.work/``) make a rerun resume.
* Training and validation carry the tag ``speechqe-gpu`` when they will run on a GPU, so the
  ``tag:speechqe-gpu`` concurrency limit bounds them together with the scoring tasks of
  evaluations.
* Work is keyed by the bundle, not by Prefect's result cache:
  :func:`~speechqe.predictors.train.finished_bundle` says whether ``out`` already holds the
  bundle this config would train (same training-data content hash, same learners), so a rerun
  trains nothing; :func:`~speechqe.predictors.train.validate_bundle` validates a bundle once.
* Tasks receive and return paths and small records (the config, flags, the bundle id).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from speechqe.errors import ConfigError
from speechqe.engine.evaluation import artifact_key

from .evaluate import _IO_RETRIES, GPU_TAG, ensure_gpu_limit


def _train():
    from speechqe.predictors import train

    return train


# ------------------------------------------------------------------------------------------
# Tasks: each wraps one library call
# ------------------------------------------------------------------------------------------
@task(name="load-config", cache_policy=NO_CACHE, persist_result=False, **_IO_RETRIES)
def load_config(config: str, device: str | None) -> tuple[Any, str]:
    """The validated training config (unknown keys are errors) and its folder."""
    lib = _train()
    return lib.load_config(config, device=device), str(lib.config_base(config))


@task(name="check-bundle", cache_policy=NO_CACHE, persist_result=False, **_IO_RETRIES)
def check_bundle(cfg: Any, out: str, base: str) -> bool:
    """Whether ``out`` already holds the bundle ``cfg`` would train (refuses another one)."""
    return _train().finished_bundle(cfg, out, base=Path(base)) is not None


@task(name="train", cache_policy=NO_CACHE, persist_result=False)
def train(cfg: Any, out: str, base: str) -> str:
    """Train every learner and the ensemble; returns the bundle id."""
    log = get_run_logger()
    bundle = _train().train_bundle(cfg, out, base=Path(base), validate=False, say=log.info)
    return bundle.bundle_id


@task(name="validate", cache_policy=NO_CACHE, persist_result=False)
def validate(cfg: Any, out: str, base: str) -> bool:
    """Evaluate the bundle on the config's ``valid:`` data once (recorded in the bundle)."""
    log = get_run_logger()
    return _train().validate_bundle(cfg, out, base=Path(base), say=log.info) is not None


@task(name="publish-artifacts", cache_policy=NO_CACHE, **_IO_RETRIES)
def publish_artifacts(out: str) -> dict[str, Any]:
    """The bundle's metrics as a markdown artifact and a link to the bundle folder."""
    from speechqe.predictors.bundle import bundle_hash, read_meta

    meta = read_meta(out)
    bundle_id = bundle_hash(out)
    location = Path(out).resolve().as_uri()
    key = artifact_key(f"mos-{Path(out).name}")
    create_markdown_artifact(markdown=_train().report_markdown(meta, location), key=key,
                             description=f"MOS bundle {bundle_id}: learners' metrics")
    create_link_artifact(link=location, link_text=f"bundle {bundle_id}", key=f"{key}-bundle",
                         description="the trained bundle folder")
    return {"bundle_id": bundle_id, "columns": list(meta.get("columns", [])),
            "report": _train().report_rows(meta)}


# ------------------------------------------------------------------------------------------
# The flow
# ------------------------------------------------------------------------------------------
def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    out = str(dict(flow_run.parameters).get("out") or "bundle")
    return f"train-{Path(out).name or 'bundle'}-{datetime.now(timezone.utc):%Y%m%dT%H%M}"


@flow(name="train-mos-predictor", flow_run_name=_flow_run_name, validate_parameters=True)
def train_mos_predictor(
    config: str,
    out: str,
    device: str | None = None,
    gpu_slots: int | None = None,
) -> dict[str, Any]:
    """Train the MOS predictor bundle a ``speechqe mos train`` config describes into ``out``,
    validate it on the config's ``valid:`` data, publish its metrics.

    Args:
        config: the training config (YAML, see ``docs/mos.md``); relative data paths are
            resolved against its folder.
        out: the bundle folder. When it already holds the bundle this config trains (same
            training data, same learners), nothing is trained again; another bundle there is
            an error.
        device: overrides the config's ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        gpu_slots: set the ``tag:speechqe-gpu`` concurrency limit (default: keep it, or 1).

    Returns:
        ``{"bundle", "bundle_id", "status": "trained" | "reused", "validated", "columns",
        "report"}`` (``report``: :func:`speechqe.predictors.train.report_rows`).
    """
    log = get_run_logger()
    if gpu_slots is not None and gpu_slots < 1:
        raise ConfigError(f"gpu_slots must be at least 1 (got {gpu_slots})")
    if not str(out).strip():
        raise ConfigError("out: give a folder for the bundle")
    cfg, base = load_config(config, device)
    on_gpu = _train().uses_gpu(cfg)  # also fails now, not after hours, when CUDA is missing
    done = check_bundle(cfg, out, base)

    trainer, validator = train, validate
    if on_gpu and (not done or cfg.valid is not None):
        slots = ensure_gpu_limit(gpu_slots)
        log.info("training on a GPU: at most %d GPU task(s) at once (tag %s)", slots, GPU_TAG)
        trainer, validator = (t.with_options(tags={GPU_TAG}) for t in (train, validate))
    if done:
        log.info("%s already holds this config's bundle (same training data): not retrained", out)
    else:
        trainer(cfg, out, base)
    validated = validator(cfg, out, base) if cfg.valid is not None else False
    published = publish_artifacts(out)
    log.info("bundle %s: %s", published["bundle_id"], out)
    return {"bundle": str(out), "status": "reused" if done else "trained",
            "validated": validated, **published}
