"""Write the bundled quickstart data: procedurally generated support messages with labels.

    python -m honing.quickstart.make_data

Deterministic (one seeded `random.Random`). Writes, next to this file, `data/train.jsonl`
(600 records) and `data/test.jsonl` (120 records) in OpenAI chat format, plus
`data/test_labels.jsonl` (the test labels, same order; the label is also the assistant turn).

A message is a body sentence chosen by category, an order number (or none), an urgency cue
and a tone cue, wrapped in varied greetings, sign-offs, names, line breaks and the odd typo.
A quarter of the body templates, and of the urgency and tone phrases, are held out for the
test split, so the held-out score measures generalisation to unseen wording, not recall.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from honing.quickstart.task import DATA_DIR, to_chat_record

SEED = 20240611
TRAIN_SIZE = 600
TEST_SIZE = 120
ORDER_ID_SHARE = 0.6
ID = "@@@"
"""Stands for the order number until typos and casing are applied, so the id stays as written."""

# Bodies. {ORDER} is a noun phrase for the order: with its number ("order A-10493") or
# without ("my last order"). A body with no {ORDER} gets a separate order sentence when the
# message carries a number. Every other {slot} is filled from SLOTS.
BODIES: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for {ORDER}. Both payments of {amount} show on my card statement.",
        "My card was charged {amount} but the total at checkout said {amount2}.",
        "Can you send me a proper invoice for {ORDER}? I need it for my company's expenses.",
        "My payment keeps getting declined even though my card works everywhere else.",
        "I cancelled my subscription last month but I was billed {amount} again on {date}.",
        "The discount code {promo} didn't get applied to {ORDER}, so I paid full price.",
        "I see a charge of {amount} from you on {date} that I don't recognise.",
        "Why was I charged a delivery fee on {ORDER}? Your site said free delivery over {amount}.",
        "I'd like to switch my billing from monthly to yearly. How do I do that?",
        "The invoice {invoice} lists the wrong company name and VAT number.",
        "I was charged in dollars instead of euros for {ORDER}, and my bank added a conversion fee.",
        "Can I pay for {ORDER} by bank transfer instead of the card I entered?",
        "My gift card should have {amount} left on it but checkout shows a balance of zero.",
        "There's a pending authorisation of {amount} on my card that hasn't dropped off after {days} days.",
        "The price of the {product} dropped {days} days after I bought it. Can you adjust the price on {ORDER}?",
        "I want to update the credit card on file for my subscription.",
        "I was quoted {amount} for the {product}, but I was charged {amount2}.",
        "Your website took my money for {ORDER} twice after the page timed out at the payment step.",
        "Is it possible to split the payment for {ORDER} across two cards?",
        "I need a receipt that shows the sales tax paid on {ORDER}.",
        "My annual plan renewed automatically at {amount}; I thought the renewal price was {amount2}.",
        "Can I be billed on the 1st of the month instead of the {nth}?",
        "My bank statement shows three payments to you for a single purchase.",
        "The instalment plan on {ORDER} charged me the full amount at once.",
    ],
    "shipping": [
        "My package from {ORDER} was due on {date} and still hasn't arrived.",
        "The tracking number {tracking} hasn't updated in {days} days.",
        "Can I change the delivery address for {ORDER}? I've just moved to {city}.",
        "The courier says {ORDER} was delivered but there's nothing at my door.",
        "Do you ship to {country}? I'd like to buy the {product}.",
        "{carrier} left a card saying they couldn't deliver. How do I rearrange delivery?",
        "Only half of {ORDER} arrived. The {product} is missing from the box.",
        "Why is delivery to {city} taking {days} days? The site said 2-3 days.",
        "Could you upgrade {ORDER} to express shipping? Happy to pay the difference.",
        "The box for {ORDER} arrived crushed and soaked, although the {product} inside seems fine.",
        "My parcel seems to be stuck at the {carrier} depot in {city}.",
        "Can you hold {ORDER} at the local pickup point instead of delivering it to my house?",
        "The tracking page has said 'label created' since {date}. Has it actually shipped?",
        "I received someone else's parcel instead of my {product}.",
        "Is it possible to have {ORDER} delivered on a Saturday?",
        "The driver left my {product} with a neighbour I've never met.",
        "When will {ORDER} ship? It's been showing 'processing' for {days} days.",
        "I typed the wrong house number for {ORDER}; it should be {housenum}, not {housenum2}.",
        "Customs wants a fee of {amount} before they release my parcel. Is that right?",
        "How much would it cost to send the {product} to {country}?",
        "The tracking number {tracking} you emailed me isn't recognised on the {carrier} website.",
        "My {product} was sent in two boxes and only one of them has turned up.",
        "Can you combine {ORDER} with the one I placed yesterday to save on postage?",
        "The estimated delivery date for my {product} keeps getting pushed back.",
    ],
    "returns": [
        "I'd like to return the {product} from {ORDER}. It just isn't right for me.",
        "How do I get a return label for {ORDER}?",
        "I sent the {product} back {days} days ago. When will my refund come through?",
        "Can I exchange the {product} for a different {variant}?",
        "The {product} arrived broken and I want to send it back for a replacement.",
        "What's your return policy on opened items? I bought the {product} but no longer need it.",
        "I returned {ORDER} on {date} but the return still shows as pending.",
        "Is it too late to return something I bought {days} days ago?",
        "The return label you sent me has the wrong warehouse address on it.",
        "I received the {product} in the wrong colour and would like to swap it.",
        "Can I return just one item from {ORDER} and keep the rest?",
        "I'd like a refund rather than store credit for the {product} I sent back.",
        "Do I have to pay for return postage if the {product} is faulty?",
        "The returns drop-off point in {city} refused to take my parcel.",
        "I want to send back the {product}; it looks nothing like the pictures.",
        "Please cancel the exchange on {ORDER} and refund me instead.",
        "Can someone collect the {product} for return? It's too heavy to carry to the post office.",
        "The {product} I got as a present came without a receipt. Can I still return it?",
        "I started a return for {ORDER} online but never got the QR code for drop-off.",
        "My refund for the returned {product} is {amount} less than I paid.",
        "The replacement {product} has the same fault as the first one, so I just want my money back.",
        "I ordered the {product} in two sizes to try; how do I send back the one that doesn't fit?",
        "Can I return the {product} to one of your shops instead of posting it?",
        "The {product} died after a week and I'd like to return it under warranty.",
    ],
    "technical": [
        "The {app} app crashes every time I open it on my {device}.",
        "My {gadget} won't connect to Wi-Fi since the latest update.",
        "I get error {error} when I try to pair the {gadget} with my {device}.",
        "The firmware update for the {gadget} fails at {pct}%.",
        "The {gadget} keeps restarting on its own. How do I fix it?",
        "The battery on my {gadget} drains within an hour even when it's idle.",
        "How do I reset the {gadget} to factory settings?",
        "The {app} app hasn't synced my data since {date}.",
        "Bluetooth keeps dropping between my {gadget} and my {device}.",
        "Your website shows error {error} whenever I try to open the page for {ORDER}.",
        "The touchscreen on the {gadget} doesn't respond in the top corner.",
        "The setup guide says to hold the button for five seconds, but nothing happens on the {gadget}.",
        "Which driver do I need to use the {gadget} on {os}?",
        "Notifications from the {app} app stopped working on my {device}.",
        "The {gadget} makes a loud buzzing noise while it's charging.",
        "The voice control on the {gadget} doesn't understand any of my commands.",
        "I can't get the {gadget} to show up in the {app} app.",
        "The display on my {gadget} flickers after it's been on for a while.",
        "Does the {gadget} work with {os}? The installer refuses to run.",
        "Since updating to version {version}, the {app} app freezes on the loading screen.",
        "The sensor on the {gadget} gives readings that are way off.",
        "The {gadget} from {ORDER} won't switch on even though it's fully charged.",
        "How do I update the software on the {gadget}? I can't find the option anywhere.",
        "The {app} app says 'device offline' although the {gadget} is plugged in and on Wi-Fi.",
    ],
    "account": [
        "I can't log in to my account; the password reset email never arrives.",
        "Please change the email address on my account to {email}.",
        "I'd like to delete my account and all the data you hold on me.",
        "My account got locked after too many login attempts.",
        "How do I turn on two-factor authentication for my account?",
        "I lost my phone, so I can't get the two-factor codes for my account anymore.",
        "Somebody changed the password on my account and it wasn't me.",
        "Please unsubscribe me from all your marketing emails.",
        "I accidentally made two accounts. Can you merge them?",
        "How do I change the name on my account? I got married and my surname is now {surname}.",
        "I placed {ORDER} as a guest. Can you link it to my account?",
        "The verification link in my sign-up email says it has expired.",
        "Can I add my partner as a second user on my account?",
        "I'd like a copy of all the personal data you store about me.",
        "My loyalty points vanished from my account around {date}.",
        "I signed up with {email} but I can't get into that inbox anymore.",
        "Can you update the phone number on my profile to {phone}?",
        "My account shows a stranger's address and {ORDER} in my order history.",
        "It says my username is already taken, but I've never signed up before.",
        "Please close my account; I won't be shopping with you again.",
        "I keep getting signed out of my account every few minutes.",
        "Where do I change my communication preferences in my profile?",
        "I can't find where to change my password in the account settings.",
        "Could you change my account username to {username}?",
    ],
}

URGENCY_CUES: dict[str, list[str]] = {
    "high": [
        "This is urgent.",
        "Please sort this out ASAP.",
        "I need this fixed today.",
        "I need an answer within the hour, please.",
        "It's a present for {event} on {weekday}, so I need it sorted before then.",
        "Urgent please, I have a deadline tomorrow morning.",
        "Please treat this as a priority, it can't wait.",
        "I need this resolved immediately.",
        "Please reply as soon as possible, this is time-critical.",
        "I fly out on {weekday} and need this settled before I leave.",
        "URGENT - please help right away.",
        "I need this done by end of day or I'm in real trouble.",
    ],
    "medium": [
        "A reply in the next few days would be good.",
        "Could you look into this sometime this week?",
        "I'd like this sorted within the week if possible.",
        "Please get back to me in the next couple of days.",
        "It would be nice to have this dealt with before next week.",
        "An answer by the end of the week would be great.",
        "Hoping to hear back in a day or two.",
        "Let me know within a few days, please.",
    ],
    "low": [
        "No rush, whenever you get a chance.",
        "Not urgent at all.",
        "Whenever you have a spare moment is fine.",
        "There's no hurry on this.",
        "It can wait until next month, no pressure.",
        "Just letting you know, it's not time-sensitive.",
        "Low priority, I'm just curious.",
        "Take your time with this one.",
        "No deadline on my side, reply whenever.",
        "Honestly it doesn't matter when, no urgency.",
        "Whenever it suits you, there's really no hurry.",
        "This can sit in the queue for a while, it's not pressing.",
    ],
}
MEDIUM_CUE_SHARE = 0.5
"""Medium urgency: half the messages say so ("this week"), half carry no urgency cue at all."""

TONE_CUES: dict[str, list[str]] = {
    "negative": [
        "I'm really frustrated with this.",
        "Honestly, this is unacceptable.",
        "This is the third time I've written in and I'm fed up.",
        "Very disappointed with your service.",
        "I am extremely annoyed.",
        "What a mess.",
        "Seriously, how hard can this be?",
        "I'm close to taking my business elsewhere.",
        "This is ridiculous.",
        "Your service has been awful from start to finish.",
        "I'm furious, to be honest.",
        "Not impressed at all.",
    ],
    "positive": [
        "I love your products, by the way!",
        "Your team has always been fantastic, thank you!",
        "Thanks so much, you've been brilliant so far!",
        "Really happy with everything else I've bought from you.",
        "Big fan of your shop!",
        "Thank you for the amazing service as always.",
        "Appreciate you all, keep up the great work!",
        "You folks are wonderful, thanks in advance!",
        "Such a lovely company to deal with.",
        "Absolutely delighted with my purchases so far!",
        "Your support has been great every time, cheers!",
        "I always recommend you to my friends!",
    ],
}

ORDER_PHRASES_WITH_ID = ["order {id}", "my order {id}", "order no. {id}", "order number {id}", "order {id}"]
ORDER_PHRASES_WITHOUT_ID = ["my order", "my last order", "my recent order", "the order I placed on {date}", "the order"]
ORDER_SENTENCES = [
    "My order number is {id}.",
    "Order: {id}.",
    "(order {id})",
    "It's order {id}.",
    "Ref: order {id}.",
    "The order number is {id}.",
    "This is about order {id}.",
    "Order number {id}, for reference.",
]

GREETINGS = ["Hi,", "Hello,", "Hi there,", "Dear support team,", "Hey,", "Good morning,", "Good afternoon,",
             "To whom it may concern,", "Hello team,", "Hi {company} support,", "Dear Sir or Madam,", "Hiya,"]
CLOSINGS = ["Thanks,", "Regards,", "Best,", "Cheers,", "Kind regards,", "Thank you,", "Best wishes,", "Many thanks,",
            "Sent from my phone", "Yours,"]
SUBJECTS = ["Question", "Need help", "Problem", "Support request", "Help please", "Issue with my purchase",
            "Query", "Hello", "Request"]
NAMES = ["Maria", "Tom", "Aisha", "Liam", "Chen", "Sofia", "Raj", "Emma", "Lucas", "Fatima", "Noah", "Olga",
         "Daniel", "Priya", "James", "Yuki", "Carlos", "Hannah", "Omar", "Ingrid", "Ben", "Grace", "Mateo",
         "Zara", "Peter", "Leila", "Sam", "Nina", "Kwame", "Elena", "Jack", "Mei", "Tariq", "Lucy", "Ivan", "Chloe"]
SURNAMES = ["Smith", "Garcia", "Okafor", "Nguyen", "Müller", "Rossi", "Kowalski", "Patel", "Johansson", "Silva",
            "O'Brien", "Tanaka", "Haddad", "Novak", "Fischer", "Dubois"]

SLOTS: dict[str, list[str]] = {
    "product": ["wireless earbuds", "X200 blender", "standing desk", "smart thermostat", "running shoes",
                "coffee grinder", "rain jacket", "robot vacuum", "fitness tracker", "4K monitor", "air fryer",
                "mechanical keyboard", "baby monitor", "e-reader", "electric toothbrush", "hiking backpack",
                "smart speaker", "desk lamp", "yoga mat", "noise-cancelling headphones", "office chair",
                "kettle", "winter coat", "cast iron pan"],
    "gadget": ["wireless earbuds", "smart thermostat", "robot vacuum", "fitness tracker", "4K monitor",
               "baby monitor", "e-reader", "smart speaker", "security camera", "smartwatch", "video doorbell",
               "mesh router", "noise-cancelling headphones", "smart plug", "drawing tablet"],
    "app": ["HomeHub", "FitTrack", "Pulse", "companion", "SoundLink", "CamView", "mobile"],
    "device": ["iPhone", "Android phone", "iPad", "Pixel", "Samsung tablet", "laptop", "MacBook", "Windows PC"],
    "os": ["Windows 11", "macOS", "Linux", "ChromeOS", "Android 14", "iOS 17"],
    "carrier": ["UPS", "DHL", "FedEx", "Royal Mail", "USPS", "DPD", "Hermes", "PostNL"],
    "city": ["Leeds", "Austin", "Lyon", "Toronto", "Melbourne", "Dublin", "Munich", "Denver", "Porto",
             "Glasgow", "Seattle", "Utrecht"],
    "country": ["Canada", "Norway", "Japan", "Brazil", "Ireland", "New Zealand", "Mexico", "Poland"],
    "variant": ["size", "colour", "model"],
    "promo": ["SPRING20", "WELCOME10", "FREESHIP", "SAVE15", "VIP25", "SUMMER5"],
    "error": ["E-42", "0x80070005", "503", "ERR_TIMEOUT", "code 17", "E-07", "404"],
    "event": ["my son's birthday", "our anniversary", "a wedding", "my mum's birthday", "a work event"],
    "weekday": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "nth": ["15th", "20th", "28th", "10th"],
    "company": ["Nordic Goods", "BrightHome", "Peak Outfitters", "the shop"],
    "domain": ["gmail.com", "outlook.com", "proton.me", "yahoo.co.uk", "icloud.com"],
}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def held_out(items: list[str], split: str) -> list[str]:
    """The test split's share of a phrase pool (every fourth entry) or the train split's (the rest)."""
    return [item for index, item in enumerate(items) if (index % 4 == 3) == (split == "test")]


def pick_phrase(rng: random.Random, pool: list[str], split: str) -> str:
    """Train draws only train phrases; test draws held-out phrases half the time, so both seen
    and unseen cues are measured."""
    if split == "test" and rng.random() < 0.5:
        return rng.choice(held_out(pool, "test"))
    return rng.choice(held_out(pool, "train"))


def make_order_id(rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 0:
        return f"{rng.choice('ABCDEFHKMRST')}-{rng.randint(10000, 99999)}"
    if style == 1:
        return f"#{rng.randint(100000, 999999)}"
    if style == 2:
        return f"ORD-{rng.randint(1000, 9999)}-{rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}"
    return str(rng.randint(1000000, 9999999))


def make_amount(rng: random.Random) -> str:
    currency = rng.choice(["$", "€", "£"])
    value = rng.choice([rng.randint(5, 400), round(rng.uniform(5, 400), 2)])
    return f"{currency}{value:.2f}" if isinstance(value, float) else f"{currency}{value}"


def make_date(rng: random.Random) -> str:
    return rng.choice([
        f"{rng.choice(MONTHS)} {rng.randint(1, 28)}",
        f"{rng.randint(1, 28)} {rng.choice(MONTHS)}",
        f"{rng.randint(1, 12)}/{rng.randint(1, 28)}",
        f"last {rng.choice(SLOTS['weekday'])}",
    ])


def make_tracking(rng: random.Random) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    return rng.choice([
        "1Z" + "".join(rng.choice(alphabet) for _ in range(16)),
        "JD" + "".join(rng.choice("0123456789") for _ in range(12)),
        "".join(rng.choice("0123456789") for _ in range(12)),
    ])


def fill(template: str, rng: random.Random, name: str) -> str:
    """Fill every {slot} except {ORDER} (which `compose` handles)."""
    amount = make_amount(rng)
    amount2 = make_amount(rng)
    while amount2 == amount:
        amount2 = make_amount(rng)
    housenum = rng.randint(2, 180)
    values = {key: rng.choice(pool) for key, pool in SLOTS.items()}
    values.update(
        amount=amount,
        amount2=amount2,
        date=make_date(rng),
        days=str(rng.randint(3, 21)),
        pct=str(rng.randint(10, 95)),
        tracking=make_tracking(rng),
        housenum=str(housenum),
        housenum2=str(housenum + rng.choice([1, 10, 11])),
        invoice=f"INV-{rng.randint(2021, 2025)}-{rng.randint(1000, 9999)}",
        version=f"{rng.randint(2, 6)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}",
        email=f"{name.lower()}.{rng.choice(SURNAMES).lower().replace(chr(39), '')}@{values['domain']}",
        surname=rng.choice(SURNAMES),
        username=f"{name.lower()}_{rng.randint(10, 99)}",
        phone=f"+{rng.randint(1, 49)} {rng.randint(100, 999)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
        ORDER="{ORDER}",
    )
    return template.format(**values)


def add_typos(text: str, rng: random.Random) -> str:
    """One or two slips of the keyboard in words of letters only (never in numbers or ids)."""
    words = text.split(" ")
    candidates = [i for i, word in enumerate(words) if word.isalpha() and len(word) >= 4]
    for index in rng.sample(candidates, min(len(candidates), rng.randint(1, 2))):
        word = words[index]
        at = rng.randrange(1, len(word) - 1)
        kind = rng.randrange(3)
        if kind == 0:
            word = word[:at] + word[at + 1] + word[at] + word[at + 2:]
        elif kind == 1:
            word = word[:at] + word[at + 1:]
        else:
            word = word[:at] + word[at] + word[at:]
        words[index] = word
    return " ".join(words)


def compose(rng: random.Random, split: str, category: str) -> dict:
    """One support message and its label."""
    urgency = rng.choices(["low", "medium", "high"], weights=[3, 3, 4])[0]
    sentiment = rng.choices(["positive", "neutral", "negative"], weights=[3, 3, 4])[0]
    order_id = make_order_id(rng) if rng.random() < ORDER_ID_SHARE else None
    name = rng.choice(NAMES)

    body = fill(rng.choice(held_out(BODIES[category], split)), rng, name)
    if "{ORDER}" in body:
        phrase = rng.choice(ORDER_PHRASES_WITH_ID if order_id else ORDER_PHRASES_WITHOUT_ID)
        body = body.replace("{ORDER}", phrase.format(id=ID, date=make_date(rng)))
    elif order_id:
        sentence = rng.choice(ORDER_SENTENCES).format(id=ID)
        body = f"{sentence} {body}" if rng.random() < 0.3 else f"{body} {sentence}"

    middle = [body]
    if urgency != "medium" or rng.random() < MEDIUM_CUE_SHARE:
        cue = fill(pick_phrase(rng, URGENCY_CUES[urgency], split), rng, name)
        middle.insert(rng.choice([0, 1]) if urgency == "high" else 1, cue)
    if sentiment != "neutral":
        tone = pick_phrase(rng, TONE_CUES[sentiment], split)
        middle.insert(rng.choice([0, len(middle)]), tone)

    greeting = fill(rng.choice(GREETINGS), rng, name) if rng.random() < 0.75 else None
    signature = None
    if rng.random() < 0.7:
        signer = name if rng.random() < 0.6 else f"{name} {rng.choice(SURNAMES)}"
        signature = f"{rng.choice(CLOSINGS)}\n{signer}" if rng.random() < 0.6 else signer
    subject = f"Subject: {rng.choice(SUBJECTS)}" if rng.random() < 0.15 else None

    if rng.random() < 0.5:  # an email: greeting, paragraph, sign-off on their own lines
        lines = [subject, greeting, " ".join(middle), signature]
        text = "\n".join(line for line in lines if line)
    else:  # a chat message: one line
        parts = [greeting, " ".join(middle), signature.replace("\n", " ") if signature else None]
        text = " ".join(part for part in parts if part)
    if rng.random() < 0.15:
        text = add_typos(text, rng)
    if rng.random() < 0.07:
        text = text.lower()
    text = text.replace(ID, order_id or "")
    label = {"category": category, "urgency": urgency, "order_id": order_id, "sentiment": sentiment}
    return {"message": text, "label": label}


def make_split(rng: random.Random, split: str, size: int, avoid: set[str]) -> list[dict]:
    """`size` distinct tickets, categories balanced, none whose message is in `avoid`."""
    categories = [category for category in BODIES for _ in range(size // len(BODIES))]
    categories += list(BODIES)[: size - len(categories)]
    rng.shuffle(categories)
    tickets, seen = [], set(avoid)
    for category in categories:
        ticket = compose(rng, split, category)
        while ticket["message"] in seen:
            ticket = compose(rng, split, category)
        seen.add(ticket["message"])
        tickets.append(ticket)
    return tickets


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    rng = random.Random(SEED)
    train = make_split(rng, "train", TRAIN_SIZE, avoid=set())
    test = make_split(rng, "test", TEST_SIZE, avoid={ticket["message"] for ticket in train})
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    write_jsonl(DATA_DIR / "train.jsonl", [to_chat_record(ticket) for ticket in train])
    write_jsonl(DATA_DIR / "test.jsonl", [to_chat_record(ticket) for ticket in test])
    write_jsonl(DATA_DIR / "test_labels.jsonl", [ticket["label"] for ticket in test])
    print(f"wrote {len(train)} train and {len(test)} test records to {DATA_DIR}")


if __name__ == "__main__":
    main()
