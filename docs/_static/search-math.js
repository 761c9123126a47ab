// focal-detect: search result excerpts show formulas as plain text, not raw TeX.
// Sphinx builds an excerpt from the page's text, where MathJax has not run, so
// "\(p_t = \sigma(x)\)" would be shown as is. This wraps Sphinx's Search.htmlToText
// and turns each .math element into readable text first ("p_t = σ(x)").
(() => {
  const SYMBOLS = {
    alpha: "α", beta: "β", gamma: "γ", delta: "δ", sigma: "σ", mu: "μ", lambda: "λ",
    theta: "θ", partial: "∂", nabla: "∇", sum: "Σ", infty: "∞", in: "∈", ge: "≥",
    geq: "≥", le: "≤", leq: "≤", ne: "≠", approx: "≈", cdot: "·", times: "×",
    to: "→", rightarrow: "→", ll: "≪", gg: "≫", lesssim: "≲", gtrsim: "≳", pm: "±",
    sqrt: "√", lceil: "⌈", rceil: "⌉", lfloor: "⌊", rfloor: "⌋",
  };
  const plain = (tex) => tex
    .replace(/^\s*\\[([]/, "")
    .replace(/\\[)\]]\s*$/, "")
    .replace(/\\tag\{[^{}]*\}/g, "")
    .replace(/\\mathbb\{R\}/g, "ℝ")
    .replace(/\\frac\{([^{}]*)\}\{([^{}]*)\}/g, "($1)/($2)")
    .replace(/\\(?:mathrm|text|mathbf|operatorname|boldsymbol|mathcal)\{([^{}]*)\}/g, "$1")
    .replace(/\\(?:left|right|big|Big|bigl|bigr)\b/g, "")
    .replace(/\\(?:,|;|!|quad|qquad)/g, " ")
    .replace(/\\([A-Za-z]+)/g, (match, name) => SYMBOLS[name] ?? name)
    .replace(/[{}]/g, "")
    .replace(/\s+/g, " ")
    .trim();
  const patch = () => {
    if (typeof Search === "undefined" || !Search.htmlToText || Search._plainMath) return;
    const original = Search.htmlToText;
    Search.htmlToText = (htmlString, anchor) => {
      const doc = new DOMParser().parseFromString(htmlString, "text/html");
      doc.querySelectorAll(".math").forEach((el) => {
        el.textContent = ` ${plain(el.textContent)} `;
      });
      return original(doc.documentElement.outerHTML, anchor);
    };
    Search._plainMath = true;
  };
  patch();
  document.addEventListener("DOMContentLoaded", patch);
})();
