"""The site's own pages: dashboard and help (site), announcements, support tickets."""
