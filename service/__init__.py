"""template-sync: WhatsApp message-template statuses kept in sync with Meta."""

__version__ = "0.1.0"
