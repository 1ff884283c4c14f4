"""Accounts: profiles (notification preference) and personal API tokens."""
