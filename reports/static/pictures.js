// Where a picture is: its path beside the page, or, in a page shown inline (nnvis_reports.inline),
// its data URI from the page's one table of pictures (each picture once, however often it is shown).
window.nnvisPicture = function (path) {
  var table = window.nnvisPictures;
  return (table && table[path]) || path;
};
document.querySelectorAll("img[data-picture]").forEach(function (image) {
  image.setAttribute("src", window.nnvisPicture(image.getAttribute("data-picture")));
});
