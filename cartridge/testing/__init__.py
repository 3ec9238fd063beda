"""Test support shipped with cartridge (used by its own tests and by later layers' tests)."""
