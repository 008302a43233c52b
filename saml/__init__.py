"""SAML 2.0 service provider adapter on python3-saml."""
