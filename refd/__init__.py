"""refd: an IMAP front door that answers with login and mailbox referrals."""

__version__ = "0.1.0"
