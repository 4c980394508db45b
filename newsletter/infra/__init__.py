"""Wire clients, apart from the domain: the SMTP client."""
