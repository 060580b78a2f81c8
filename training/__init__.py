"""LoRA and QLoRA training recipes."""
