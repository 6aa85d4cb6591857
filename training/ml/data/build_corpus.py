"""Regenerate the text the tiny model's tokenizer is trained on (run by hand, output committed).

    python training/ml/data/build_corpus.py

Writes `support_qa.txt` (support-style questions and answers composed from the templates below
with a fixed seed) and `docs_snapshot.txt` (this repository's own docs at the time of writing).
All of it is Redline's own text: nothing is downloaded or copied from elsewhere. The files are
committed so that the tokenizer, and so the tiny model, stay byte-for-byte reproducible even
when the docs change; rerunning this script is a deliberate change of the tiny model.
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
DOCS = ["README.md", "docs/projects.md", "docs/imports.md", "docs/queue.md", "docs/feedback.md"]

PRODUCTS = [
    "the mobile app",
    "the web dashboard",
    "the desktop client",
    "the billing portal",
    "the API",
    "the reporting module",
    "the team workspace",
    "the browser extension",
    "the starter plan",
    "the business plan",
    "the enterprise plan",
    "the data export tool",
]
TOPICS = {
    "password": (
        [
            "How do I reset my password?",
            "I forgot my password, what now?",
            "Why does {product} say my password is wrong?",
            "Can I change my password from {product}?",
            "The reset link for my password has expired.",
        ],
        [
            'Open the sign-in page and choose "Forgot password". We send a reset link to the '
            "address on your account; it stays valid for {hours} hours.",
            "You can change it under Settings, then Security. Pick at least {length} characters; "
            "a passphrase of a few unrelated words works well.",
            "Reset links expire after {hours} hours for your safety. Request a new one and use it "
            "from the same browser.",
        ],
    ),
    "billing": (
        [
            "Why was I charged twice this month?",
            "How do I update my card for {product}?",
            "Can I get an invoice with my company's VAT number?",
            "When does my subscription renew?",
            "I was billed after I cancelled.",
        ],
        [
            "A second charge is usually a pending authorisation that disappears within {days} "
            "days. If it is still there after that, reply with the last four digits of the card.",
            "Go to Billing, then Payment methods, and add the new card before removing the old one.",
            "Invoices can carry a VAT number: add it under Billing, then Company details, and we "
            "reissue the last {count} invoices on request.",
            "Your plan renews on the same day each month. The date is shown under Billing, next to "
            "the plan name.",
            "We refund charges made after a cancellation. Send us the invoice number and we will "
            "process it within {days} working days.",
        ],
    ),
    "shipping": (
        [
            "Where is my parcel?",
            "My order has not arrived yet.",
            "Can I change the delivery address?",
            "Do you ship abroad?",
            "The tracking number does not work.",
        ],
        [
            "Orders leave our warehouse within {days} working days. The tracking link in your "
            "confirmation email shows where the parcel is.",
            "You can change the address until the order is packed. After that, ask the carrier to "
            "redirect it using the tracking number.",
            "We ship to {count} countries. Delivery abroad takes {days} to {days2} working days, and "
            "import duties are paid by the recipient.",
            "New tracking numbers become active after the carrier scans the parcel, usually within "
            "{hours} hours.",
        ],
    ),
    "returns": (
        [
            "Can I return a sale item?",
            "How do I send something back?",
            "The item arrived damaged.",
            "How long does a refund take?",
            "Can I exchange a size?",
        ],
        [
            "Yes: items can be returned within {days} days, sale items included, as long as they are "
            "unused and in the original packaging.",
            "Start a return from your order page. Print the label, pack the item and drop it at any "
            "carrier point.",
            "We are sorry it arrived damaged. Send a photo of the item and the box, and we will ship "
            "a replacement at no cost.",
            "Refunds reach your account {days} to {days2} working days after we receive the return.",
        ],
    ),
    "account": (
        [
            "How do I delete my account?",
            "Can I change the email address on my account?",
            "How do I add a colleague to {product}?",
            "How do I turn on two-factor authentication?",
            "Someone else signed in to my account.",
        ],
        [
            'Go to Settings, then Account, and choose "Delete account". Your data is removed after '
            "{days} days; until then you can change your mind.",
            "Change the address under Settings, then Profile. We send a confirmation to both the old "
            "and the new address.",
            "Admins invite colleagues under Team, then Members. Each invitation is valid for {days} days.",
            "Turn it on under Settings, then Security, and scan the code with an authenticator app. "
            "Keep the {count} recovery codes somewhere safe.",
            "Change your password at once and sign out all sessions under Settings, then Security. "
            "Then tell us the time you noticed it and we will check the sign-in history.",
        ],
    ),
    "api": (
        [
            "Why does the API return 429?",
            "How do I create an API token?",
            "Is there a limit on requests?",
            "The API returns 401 with a valid token.",
            "How do I paginate results?",
        ],
        [
            "429 means too many requests. The limit is {count} requests per minute per token; wait "
            "for the time given in the Retry-After header.",
            "Create a token under Settings, then API tokens. Copy it right away: we only show it once.",
            "Tokens expire after {days} days. A 401 with a token that used to work usually means it "
            "expired or was revoked.",
            "Lists are paginated with a cursor. Pass the value of next from one page to get the "
            "following page, {count} items at a time.",
        ],
    ),
    "privacy": (
        [
            "Where is my data stored?",
            "Can I export all my data?",
            "Do you use my data to train models?",
            "How long do you keep logs?",
            "Who can see my reports?",
        ],
        [
            "Your data is stored in the region you chose when the workspace was created, and backups "
            "stay in the same region.",
            "Yes. The data export tool builds an archive of everything in your workspace; large "
            "workspaces take up to {hours} hours.",
            "No. Your content is used only to provide the service to you, and never to train "
            "models for anyone else.",
            "Access logs are kept for {days} days and then deleted.",
            "Only members of your workspace with the reporting role can see reports.",
        ],
    ),
}
OPENERS = ["", "Hello! ", "Hi, ", "Good morning. ", "Quick question: ", "Sorry to bother you, "]
CLOSERS = [
    "",
    " Let us know if anything is unclear.",
    " We are happy to help further.",
    " Thank you for your patience.",
    " Reply to this message if the problem continues.",
]
REVIEW_NOTES = [
    "Accepted: the answer is correct and polite.",
    "Corrected: the answer gave the wrong number of days.",
    "Rejected: the answer promised a refund we do not offer.",
    "Picked A over B: A names the exact menu, B is vague.",
    "Corrected: removed a claim that was not in the policy.",
    "Accepted: short, accurate and in our tone of voice.",
]


def fill(template: str, rng: random.Random) -> str:
    days = rng.choice([2, 3, 5, 7, 14, 30])
    return template.format(
        product=rng.choice(PRODUCTS),
        hours=rng.choice([1, 2, 12, 24, 48]),
        length=rng.choice([10, 12, 14]),
        days=days,
        days2=days + rng.choice([2, 3, 5]),
        count=rng.choice([3, 5, 10, 20, 60, 100]),
    )


def support_qa(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = []
    topics = sorted(TOPICS)
    for i in range(n):
        questions, answers = TOPICS[topics[rng.randrange(len(topics))]]
        opener = rng.choice(OPENERS)
        question = fill(rng.choice(questions), rng)
        if opener.endswith((", ", ": ")) and not question.startswith("I "):
            question = question[0].lower() + question[1:]
        question = opener + question
        answer = fill(rng.choice(answers), rng) + rng.choice(CLOSERS)
        lines.append(f"Customer: {question}\nAgent: {answer}\n")
        if i % 5 == 0:
            lines.append(f"Reviewer note: {rng.choice(REVIEW_NOTES)}\n")
        lines.append("\n")
    return "".join(lines)


def main() -> None:
    (HERE / "support_qa.txt").write_text(support_qa(1400), encoding="utf-8")
    docs = "\n\n".join((ROOT / name).read_text(encoding="utf-8") for name in DOCS)
    (HERE / "docs_snapshot.txt").write_text(docs, encoding="utf-8")


if __name__ == "__main__":
    main()
