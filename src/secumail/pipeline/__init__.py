"""The staged pipeline: bus, stage runner, admission control, intake, stages."""
