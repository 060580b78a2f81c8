"""The reader: a small extractive QA model (MiniLM + span head) that tells, per retrieved chunk,
the best answer span, its score and a no-answer score. `ragdock train` with a `kind: reader`
config runs `recipe.py`; `inference.Reader` loads the result for the gateway."""
