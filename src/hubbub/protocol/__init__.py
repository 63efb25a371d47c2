"""Wire protocols: message codecs and the OData filter language."""
