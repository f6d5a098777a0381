"""The dashboard's screens: the main view and its modals, one per module."""
