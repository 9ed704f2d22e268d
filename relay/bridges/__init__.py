"""Bridges between the protocols clients speak and the chat completions every channel serves:
each module turns its protocol's request into a chat completion request, and the chat answer,
whole or streamed, into its protocol's answer. They do no I/O; relay.handlers does."""
