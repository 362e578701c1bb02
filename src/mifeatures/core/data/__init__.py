"""Images: STL-10's binary layout and the article's grayscale."""
