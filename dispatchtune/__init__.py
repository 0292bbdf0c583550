"""dispatchtune: LoRA fine-tuning of small open models into tool-calling dispatch models."""
