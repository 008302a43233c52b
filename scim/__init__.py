"""SCIM 2.0 service provider adapter (RFC 7643/7644)."""
