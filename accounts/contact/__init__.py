"""The contact form: messages (with checked attachments) that staff read and answer in the
admin, purged after CONTACT_RETENTION_DAYS."""
