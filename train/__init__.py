"""Training: LoRA SFT with TRL on `prep` samples, trained on the assistant turns only (recipes in ../recipes)."""
