(function () {
  function draw() {
    var players = document.querySelectorAll('audio[data-audio]');
    for (var j = 0; j < players.length; j++) {
      var blob = document.getElementById(players[j].getAttribute('data-audio'));
      players[j].src = 'data:' + blob.getAttribute('data-mime') + ';base64,' + blob.textContent.trim();
    }
    if (typeof Plotly === 'undefined') { document.body.setAttribute('data-charts-ready', '0'); return; }
    var figs = document.querySelectorAll('script.plotly-fig');
    for (var i = 0; i < figs.length; i++) {
      var spec = JSON.parse(figs[i].textContent);
      var el = document.getElementById(figs[i].getAttribute('data-target'));
      Plotly.newPlot(el, spec.data, spec.layout, {responsive: true, displaylogo: false});
    }
    document.body.setAttribute('data-charts-ready', String(figs.length));
  }
  if (document.readyState === 'loading') { document.addEventListener('DOMContentLoaded', draw); }
  else { draw(); }
})();
