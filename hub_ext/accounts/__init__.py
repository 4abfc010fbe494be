"""Accounts: platform users and their unix accounts, passwords, privilege groups, login delays."""
