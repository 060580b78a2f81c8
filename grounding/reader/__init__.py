"""The grounding reader: a small encoder that reads each retrieved source for the question and
gives its best answer span, the span score and a no-answer score (trained by `training/reader`)."""
