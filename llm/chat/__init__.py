"""The conversation with Oh-LoRA: one Chat for the terminal (run_chat.py) and the browser."""
