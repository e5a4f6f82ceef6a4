"""Models: the locally trained tokenizer (``tokenizer``), tiny Llama/Qwen2 checkpoints for the demo
(``factory``) and loading any Hugging Face causal LM with LoRA (``loading``)."""
