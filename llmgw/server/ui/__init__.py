"""The /ui pages: views, charts, CSRF, the data they show, sessions."""
