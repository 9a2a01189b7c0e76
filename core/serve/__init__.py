"""The local OpenAI-compatible API (`corral serve`): guarded by Llama Guard, grounded in the
user's knowledge bases, built on the chat, safety and documents areas of core."""
