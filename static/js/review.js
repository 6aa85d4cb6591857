/* Redline review page: keyboard shortcuts, the correction editor with a live word diff,
 * drafts kept in sessionStorage (per item), and the time spent on each item.
 *
 * Safety: model text reaches this script only as DOM text (textContent) and leaves it only
 * as text nodes or form values; nothing here uses innerHTML, eval or inline handlers (CSP).
 * The item (#review) is replaced by htmx after each decision, so state is reset on swap and
 * every listener is delegated from the document.
 */
(function () {
  "use strict";

  var DRAFT_PREFIX = "redline:review-draft:";
  var MAX_LCS_CELLS = 4000000; // beyond this the changed middle is shown as one replacement
  var CONTEXT_TOKENS = 24; // unchanged words shown around a change
  var state = { root: undefined, mode: null, startedAt: now(), diffTimer: 0, saveTimer: 0 };

  function now() {
    return window.performance && performance.now ? performance.now() : Date.now();
  }
  function byId(id) {
    return document.getElementById(id);
  }
  function reviewRoot() {
    return byId("review");
  }
  function reviewForm() {
    return byId("review-form");
  }

  // ---- Word diff (LCS over words and the whitespace between them) ------------------------

  function tokens(text) {
    return text.match(/\s+|[^\s]+/g) || [];
  }

  function push(ops, type, token) {
    var last = ops[ops.length - 1];
    if (last && last.type === type) last.tokens.push(token);
    else ops.push({ type: type, tokens: [token] });
  }

  function diffWords(before, after) {
    var a = tokens(before);
    var b = tokens(after);
    var ops = [];
    var start = 0;
    while (start < a.length && start < b.length && a[start] === b[start]) start++;
    var endA = a.length;
    var endB = b.length;
    while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
      endA--;
      endB--;
    }
    for (var s = 0; s < start; s++) push(ops, "eq", a[s]);
    var x = a.slice(start, endA);
    var y = b.slice(start, endB);
    var n = x.length;
    var m = y.length;
    if (n && m && n * m <= MAX_LCS_CELLS) {
      // table[i][j]: length of the longest common subsequence of x[i:] and y[j:]
      var w = m + 1;
      var table = new Uint32Array((n + 1) * w);
      for (var i = n - 1; i >= 0; i--) {
        for (var j = m - 1; j >= 0; j--) {
          table[i * w + j] =
            x[i] === y[j]
              ? table[(i + 1) * w + j + 1] + 1
              : Math.max(table[(i + 1) * w + j], table[i * w + j + 1]);
        }
      }
      var p = 0;
      var q = 0;
      while (p < n && q < m) {
        if (x[p] === y[q]) {
          push(ops, "eq", x[p]);
          p++;
          q++;
        } else if (table[(p + 1) * w + q] >= table[p * w + q + 1]) {
          push(ops, "del", x[p++]);
        } else {
          push(ops, "ins", y[q++]);
        }
      }
      while (p < n) push(ops, "del", x[p++]);
      while (q < m) push(ops, "ins", y[q++]);
    } else {
      for (var d = 0; d < n; d++) push(ops, "del", x[d]);
      for (var e = 0; e < m; e++) push(ops, "ins", y[e]);
    }
    for (var t = endA; t < a.length; t++) push(ops, "eq", a[t]);
    return ops;
  }

  function renderDiff(into, ops) {
    while (into.firstChild) into.removeChild(into.firstChild);
    var changed = ops.some(function (op) {
      return op.type !== "eq";
    });
    if (!changed) {
      var none = document.createElement("span");
      none.className = "empty";
      none.textContent = "No changes yet.";
      into.appendChild(none);
      return;
    }
    ops.forEach(function (op, index) {
      if (op.type === "eq") {
        var toks = op.tokens;
        var first = index === 0;
        var last = index === ops.length - 1;
        var keep = CONTEXT_TOKENS;
        if (toks.length <= keep * 2 + 1) {
          into.appendChild(document.createTextNode(toks.join("")));
          return;
        }
        if (!first) into.appendChild(document.createTextNode(toks.slice(0, keep).join("")));
        var skip = document.createElement("span");
        skip.className = "diff-skip";
        skip.textContent = " … ";
        into.appendChild(skip);
        if (!last) into.appendChild(document.createTextNode(toks.slice(-keep).join("")));
        return;
      }
      var el = document.createElement(op.type === "ins" ? "ins" : "del");
      el.className = op.type === "ins" ? "diff-ins" : "diff-del";
      el.textContent = op.tokens.join("");
      into.appendChild(el);
    });
  }

  function updateDiff(textarea) {
    if (!textarea) return;
    var source = byId(textarea.getAttribute("data-diff-against") || "");
    var into = byId(textarea.getAttribute("data-diff-into") || "");
    if (!source || !into) return;
    renderDiff(into, diffWords(source.textContent, textarea.value));
  }

  function scheduleDiff(textarea) {
    window.clearTimeout(state.diffTimer);
    state.diffTimer = window.setTimeout(function () {
      updateDiff(textarea);
    }, 60);
  }

  // ---- Drafts ------------------------------------------------------------------------------

  function draftKey(itemId) {
    return DRAFT_PREFIX + itemId;
  }

  function storage() {
    try {
      return window.sessionStorage;
    } catch (err) {
      return null;
    }
  }

  function saveDraft() {
    var root = reviewRoot();
    var form = reviewForm();
    var store = storage();
    if (!root || !form || !store || !root.getAttribute("data-item-id")) return;
    var fields = [];
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.type === "hidden" || el.type === "submit" || el.type === "button") {
        return;
      }
      if (el.type === "radio" || el.type === "checkbox") {
        if (el.checked) fields.push([el.name, el.value]);
        return;
      }
      fields.push([el.name, el.value]);
    });
    var draft = { correcting: form.elements.correcting.value === "1", fields: fields };
    try {
      store.setItem(draftKey(root.getAttribute("data-item-id")), JSON.stringify(draft));
    } catch (err) {
      /* storage full or disabled: the page itself still holds the text */
    }
  }

  function scheduleSave() {
    window.clearTimeout(state.saveTimer);
    state.saveTimer = window.setTimeout(saveDraft, 250);
  }

  function dropDraft(itemId) {
    var store = storage();
    if (store) store.removeItem(draftKey(itemId));
  }

  function restoreDraft(root) {
    var store = storage();
    var form = reviewForm();
    if (!store || !form || !root.hasAttribute("data-fresh")) return;
    var raw = store.getItem(draftKey(root.getAttribute("data-item-id")));
    if (!raw) return;
    var draft;
    try {
      draft = JSON.parse(raw);
    } catch (err) {
      return;
    }
    var values = {};
    (draft.fields || []).forEach(function (pair) {
      (values[pair[0]] = values[pair[0]] || []).push(pair[1]);
    });
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || !(el.name in values) || el.type === "hidden") return;
      if (el.type === "radio" || el.type === "checkbox") {
        el.checked = values[el.name].indexOf(el.value) !== -1;
      } else if (el.type !== "submit" && el.type !== "button") {
        el.value = values[el.name][0];
      }
    });
    if (draft.correcting) openEditor(false);
    var note = document.createElement("p");
    note.className = "notice draft-note";
    note.setAttribute("role", "status");
    note.textContent = "Your unsent draft for this item was restored.";
    form.insertBefore(note, form.firstChild);
  }

  // ---- Modes: correcting and rejecting ------------------------------------------------------

  function chosenCandidate(form) {
    // One hidden input (a single output) or radios (a RadioNodeList whose value is the checked one).
    var field = form.elements.correct_candidate;
    if (!field) return "";
    if (!field.value && field.length && field[0].value) return field[0].value;
    return field.value;
  }

  function originalText(candidateId) {
    var el = byId("output-" + candidateId);
    return el ? el.textContent : "";
  }

  function openEditor(focus) {
    var form = reviewForm();
    var editor = byId("review-editor");
    var textarea = byId("corrected-output");
    if (!form || !editor || !textarea) return;
    var candidate = chosenCandidate(form);
    editor.hidden = false;
    form.elements.correcting.value = "1";
    textarea.setAttribute("data-diff-against", "output-" + candidate);
    if (!textarea.value) {
      textarea.value = originalText(candidate);
      textarea.setAttribute("data-prefilled-from", candidate);
    }
    state.mode = "correct";
    updateDiff(textarea);
    if (focus) textarea.focus();
  }

  function closeEditor() {
    var form = reviewForm();
    var editor = byId("review-editor");
    if (!form || !editor) return;
    editor.hidden = true;
    form.elements.correcting.value = "0";
    if (state.mode === "correct") state.mode = null;
    focusRoot();
    scheduleSave();
  }

  function switchCandidate(radio) {
    // Choosing another output to correct refills the box only if it was not edited yet.
    var textarea = byId("corrected-output");
    if (!textarea) return;
    var from = textarea.getAttribute("data-prefilled-from");
    if (from && textarea.value === originalText(from)) {
      textarea.value = originalText(radio.value);
      textarea.setAttribute("data-prefilled-from", radio.value);
    }
    textarea.setAttribute("data-diff-against", "output-" + radio.value);
    updateDiff(textarea);
  }

  function startReject() {
    var rationale = byId("rationale");
    var hint = byId("reject-hint");
    if (!rationale) return;
    state.mode = "reject";
    if (hint) hint.hidden = false;
    rationale.focus();
  }

  function cancelReject() {
    var hint = byId("reject-hint");
    if (hint) hint.hidden = true;
    if (state.mode === "reject") state.mode = null;
  }

  function clickSubmit(kind) {
    var button = document.querySelector('#review-form [data-submit="' + kind + '"]');
    if (button) button.click();
    return !!button;
  }

  function focusRoot() {
    var root = reviewRoot();
    if (root) root.focus({ preventScroll: true });
  }

  // ---- Keyboard -----------------------------------------------------------------------------

  var NOT_TYPING = ["radio", "checkbox", "button", "submit", "reset", "range", "color", "file"];

  function isTyping(el) {
    if (!el || !el.tagName) return false;
    if (el.isContentEditable) return true;
    var tag = el.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT") return true;
    return tag === "INPUT" && NOT_TYPING.indexOf((el.type || "").toLowerCase()) === -1;
  }

  function isUsable(el) {
    return !el.disabled && !el.closest("[hidden]") && el.getClientRects().length > 0;
  }

  function clickKey(key) {
    var scope = reviewRoot() || document;
    var sel = '[data-key="' + key + '"]';
    var candidates = Array.prototype.slice.call(scope.querySelectorAll(sel));
    if (scope !== document) {
      candidates = candidates.concat(Array.prototype.slice.call(document.querySelectorAll(sel)));
    }
    for (var i = 0; i < candidates.length; i++) {
      if (isUsable(candidates[i])) {
        candidates[i].click();
        return true;
      }
    }
    return false;
  }

  function numberInGroup(target, digit) {
    var group = target && target.closest ? target.closest("[data-number-keys]") : null;
    if (!group) return false;
    var input = group.querySelector('input[data-number="' + digit + '"]');
    if (!input) return true; // the key belongs to the focused question even if out of range
    if (input.type === "checkbox") input.checked = !input.checked;
    else input.checked = true;
    input.focus();
    input.dispatchEvent(new Event("change", { bubbles: true }));
    return true;
  }

  function toggleShortcuts(force) {
    var panel = byId("review-shortcuts");
    if (!panel) return false;
    var show = typeof force === "boolean" ? force : panel.hidden;
    panel.hidden = !show;
    document.querySelectorAll("[data-shortcuts-toggle]").forEach(function (b) {
      b.setAttribute("aria-expanded", show ? "true" : "false");
    });
    return true;
  }

  function focusFirstQuestion() {
    var question = document.querySelector("#review-form [data-question]");
    if (!question) return false;
    if (question.tagName === "FIELDSET") {
      var target = question.querySelector("input:checked") || question.querySelector("input");
      if (target) target.focus();
    } else {
      question.focus();
    }
    return true;
  }

  function onCtrlEnter() {
    if (state.mode === "reject") return clickSubmit("reject");
    var editor = byId("review-editor");
    if (editor && !editor.hidden) return clickSubmit("correct");
    return false;
  }

  function onEscape(target) {
    if (isTyping(target)) {
      if (state.mode === "reject" && target.id === "rationale") cancelReject();
      target.blur();
      focusRoot();
      return true;
    }
    var panel = byId("review-shortcuts");
    if (panel && !panel.hidden) return toggleShortcuts(false);
    if (state.mode === "reject") {
      cancelReject();
      return true;
    }
    var editor = byId("review-editor");
    if (editor && !editor.hidden) {
      closeEditor();
      return true;
    }
    return false;
  }

  function onKey(ev) {
    if (ev.defaultPrevented || ev.isComposing) return;
    var target = ev.target;
    var handled = false;
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      handled = onCtrlEnter();
    } else if (ev.key === "Escape") {
      handled = onEscape(target);
    } else if (ev.ctrlKey || ev.metaKey || ev.altKey || isTyping(target)) {
      return;
    } else if (ev.key === "?") {
      handled = toggleShortcuts();
    } else if (/^[0-9]$/.test(ev.key)) {
      handled = numberInGroup(target, ev.key) || clickKey(ev.key);
    } else if (ev.key === "e") {
      handled = !!byId("review-editor");
      if (handled) openEditor(true);
    } else if (ev.key === "r") {
      handled = !!byId("rationale") && !!reviewForm();
      if (handled) startReject();
    } else if (ev.key === "n") {
      var rationale = byId("rationale");
      if (rationale) rationale.focus();
      handled = !!rationale;
    } else if (ev.key === "l") {
      handled = focusFirstQuestion();
    } else if (ev.key === "g") {
      var guidelines = byId("review-guidelines");
      if (guidelines) guidelines.open = !guidelines.open;
      handled = !!guidelines;
    } else if (ev.key.length === 1) {
      handled = clickKey(ev.key);
    }
    if (handled) ev.preventDefault();
  }

  // ---- Wiring --------------------------------------------------------------------------------

  function init() {
    var root = reviewRoot();
    if (root === state.root) return;
    var previousItem = state.root ? state.root.getAttribute("data-item-id") : null;
    var sameItem = !!root && !!previousItem && previousItem === root.getAttribute("data-item-id");
    state.root = root;
    state.mode = null;
    if (!sameItem) state.startedAt = now(); // an item re-shown with errors keeps its clock
    document.querySelectorAll("textarea[data-diff-against]").forEach(function (t) {
      if (t.id !== "corrected-output" || !byId("review-editor").hidden) updateDiff(t);
    });
    if (!root) return;
    var decided = root.getAttribute("data-decided");
    if (decided) dropDraft(decided);
    restoreDraft(root);
    var editor = byId("review-editor");
    if (editor && !editor.hidden) {
      state.mode = "correct";
      updateDiff(byId("corrected-output"));
    }
    // htmx moves the focus to the element with the same id in the new content: right when
    // the same item comes back with errors, wrong for a new item (keys would type into it).
    var auto = root.querySelector("[data-autofocus]");
    if (auto) auto.focus();
    else if (!sameItem || !root.contains(document.activeElement)) {
      root.focus({ preventScroll: true });
      if (previousItem) root.scrollIntoView({ block: "start" });
    }
  }

  document.addEventListener("keydown", onKey);

  document.addEventListener("input", function (ev) {
    var t = ev.target;
    if (t.matches && t.matches("textarea[data-diff-against]")) scheduleDiff(t);
    if (t.closest && t.closest("#review-form")) scheduleSave();
  });

  document.addEventListener("change", function (ev) {
    var t = ev.target;
    if (t.name === "correct_candidate" && t.type === "radio") switchCandidate(t);
    if (t.closest && t.closest("#review-form")) scheduleSave();
  });

  document.addEventListener("click", function (ev) {
    var el = ev.target.closest ? ev.target.closest("[data-command], [data-shortcuts-toggle]") : null;
    if (!el) return;
    if (el.hasAttribute("data-shortcuts-toggle")) toggleShortcuts();
    else if (el.getAttribute("data-command") === "correct-start") openEditor(true);
    else if (el.getAttribute("data-command") === "correct-cancel") closeEditor();
  });

  // Capture phase: runs before htmx's own submit listener reads the form.
  document.addEventListener(
    "submit",
    function (ev) {
      var form = ev.target;
      if (form.id !== "review-form") return;
      form.elements.time_spent_ms.value = String(Math.max(0, Math.round(now() - state.startedAt)));
      window.clearTimeout(state.saveTimer);
      saveDraft();
    },
    true
  );

  // A renewal answered after its item was swapped out must not touch the new item.
  document.addEventListener("htmx:beforeSwap", function (ev) {
    var elt = ev.detail && ev.detail.requestConfig ? ev.detail.requestConfig.elt : null;
    if (elt && elt.id === "lease-status" && !document.body.contains(elt)) {
      ev.detail.shouldSwap = false;
    }
  });

  // The item is swapped with "settle:0ms", so htmx processes it and these fire in the same
  // task as the swap: no key press can reach a half-initialised item.
  document.addEventListener("htmx:afterSwap", init);
  document.addEventListener("htmx:load", init);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
