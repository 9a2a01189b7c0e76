"""Prompt formats: Llama 2, Code Llama (70B), Llama Guard, sandboxed model templates."""
