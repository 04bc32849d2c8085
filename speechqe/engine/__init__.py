"""Layer L2, the engine: planning and scoring a speech set (:mod:`.runner`), the one
evaluation entry point that the command line and the Prefect flows both call
(:func:`.evaluation.evaluate`), aggregates with bootstrap intervals (:mod:`.aggregate`), run
history and comparison (:mod:`.history`), reports (:mod:`.report`) and resynthesis evaluation
(:mod:`.resynthesis`). It composes the core (L0) and the domains (L1, reached through the
metric plugin registry); it never imports a command line or Prefect."""
