"""The sonographer's display: a page on localhost with the live image, arrows, numbers and confidence."""
