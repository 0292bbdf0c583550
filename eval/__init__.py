"""eval: score base models, adapters and GGUF files on held-out tool-call cases."""
