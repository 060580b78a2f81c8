"""Grounding: whether retrieved sources answer a question, and the answer that says where it
came from. Knows no HTTP; the gateway's `server/rag` calls it."""
