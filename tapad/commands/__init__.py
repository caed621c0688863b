"""Commands that read or change a store directly, without a server: ``tally``, ``export``."""
