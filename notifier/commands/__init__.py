"""The `notifier` command's areas, one module each; `cli.py` assembles them into one command.

A module here parses options and prints; what a command does lives in the rest of `notifier/`.
Each command imports its dependencies inside its body, so `notifier --help` loads none of them.
"""
