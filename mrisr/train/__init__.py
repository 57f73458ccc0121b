"""Training: data, engine, handlers, optimisers and schedules."""
