"""Prefect flows over the pipeline's stages: data, training, release, and the parent `opt-pipeline`.

Thin by design: every task calls `opt.stages.run_stage`, the function the CLI and DVC call.
"""
