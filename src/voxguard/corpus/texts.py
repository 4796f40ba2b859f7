"""Sentences the text-to-speech engines read, split three ways so no sentence crosses splits.

Written for this project (no licence burden): everyday, phone-call, news and narrative registers, with
numbers, names and questions, since a detector should not learn one reading style as "synthetic".
"""

from __future__ import annotations

SENTENCES: tuple[str, ...] = (
    "Please call Stella and ask her to bring these things with her from the store.",
    "The meeting has been moved to Thursday afternoon at three thirty.",
    "I'm calling about the invoice you sent last week, the amount looks wrong.",
    "Could you confirm your date of birth and the last four digits of your card?",
    "The weather will stay cloudy tonight with light rain spreading from the west.",
    "We need to transfer the money before the bank closes, it is really urgent.",
    "Hi mum, it's me, my phone broke and I'm using a friend's number.",
    "Turn left at the second roundabout and the station is on your right.",
    "The committee approved the budget by a narrow margin of seven to five.",
    "She opened the window and listened to the children playing in the yard.",
    "Your parcel could not be delivered because nobody was at home.",
    "Honestly, I don't think that plan is going to work for the whole team.",
    "The train to Manchester is delayed by approximately twenty minutes.",
    "He bought a second hand bicycle and rode it to work every morning.",
    "Press one to speak to an advisor, or press two to hear the options again.",
    "Scientists discovered a new species of frog in the mountains of Peru.",
    "Can you send me the password for the shared drive when you get a moment?",
    "The old lighthouse keeper climbed the stairs one last time before dawn.",
    "Our quarterly revenue grew by twelve percent compared to last year.",
    "I left my keys on the kitchen table, could you check if they are there?",
    "The museum will be closed on Monday for essential maintenance work.",
    "Listen carefully, this offer is only available until midnight tonight.",
    "They walked along the river until the path disappeared into the forest.",
    "The doctor said I should rest for a week and drink plenty of water.",
    "Authorities have asked residents to stay indoors while the fire is contained.",
    "What time does the pharmacy on the corner open on Sunday mornings?",
    "My flight lands at nine forty five, can you pick me up from the airport?",
    "The recipe calls for two cups of flour, three eggs and a pinch of salt.",
    "After the storm, the village spent three days without electricity.",
    "I really appreciate your help with the move last weekend.",
    "The new software update fixes several security problems, install it now.",
    "Every evening the fishermen pulled their boats up onto the sand.",
    "We regret to inform you that your account has been temporarily suspended.",
    "The children built a snowman with a carrot nose and a red scarf.",
    "Interest rates are expected to remain unchanged until the end of the year.",
    "Do you remember the name of that little restaurant near the harbour?",
    "The concert was cancelled because the lead singer lost her voice.",
    "Please hold, your call is important to us and will be answered shortly.",
    "He paused, looked at the letter again, and slowly began to smile.",
    "The city council plans to plant ten thousand trees over the next decade.",
    "I can't talk right now, I'm driving, I'll call you back in an hour.",
    "The library extended its opening hours during the examination period.",
    "A strong wind blew the leaves across the empty car park.",
    "Your appointment with doctor Patel is confirmed for the fourteenth of May.",
    "The negotiations continued late into the night without an agreement.",
    "She plays the violin in a small orchestra on Saturday evenings.",
    "If you didn't authorise this payment, reply to this message immediately.",
    "The mountain road is closed because of heavy snow and falling rocks.",
    "We ordered pizza and watched an old film until two in the morning.",
    "The company announced that its chief executive will step down in March.",
    "It's been ages, how are the kids, and is your brother still in Canada?",
    "The bridge was built in eighteen ninety and restored a century later.",
    "Remember to bring a valid photo identification to the polling station.",
    "The cat slept in a patch of sunlight on the living room floor.",
    "Power was restored to most homes by early Tuesday morning.",
    "I think we should paint the bedroom a lighter shade of blue.",
    "The referee blew the whistle and the crowd rose to its feet.",
    "Please describe the problem you are experiencing in a few words.",
    "Farmers are worried that the dry summer will ruin this year's harvest.",
    "He forgot his umbrella on the bus and arrived at the office soaking wet.",
    "The hospital is looking for volunteers to help at the weekend.",
    "This is a reminder that your subscription renews automatically tomorrow.",
    "We spent the afternoon exploring the narrow streets of the old town.",
    "The police are appealing for witnesses to come forward.",
    "Could you speak a little louder, the line is very bad.",
    "The garden looks wonderful now that the roses are in bloom.",
    "Shares in the airline fell sharply after the announcement.",
    "I'll have a large coffee with oat milk and a blueberry muffin, please.",
    "The professor spent thirty years studying the migration of birds.",
    "Security staff found an unattended bag near platform four.",
    "Let me check the calendar and get back to you before Friday.",
    "The kettle clicked off and the kitchen filled with steam.",
    "Thousands of runners took part in the marathon despite the heat.",
    "You have one new voicemail, received today at eleven fifteen.",
    "The tiny boat drifted slowly past the rocks towards the open sea.",
    "Please verify the transaction by reading me the code we just sent you.",
    "The painter mixed yellow and blue until she found the right green.",
    "Traffic is heavy on the motorway following an accident near junction six.",
    "We should leave early tomorrow if we want to avoid the queues.",
    "The orchestra tuned their instruments as the audience took their seats.",
)


def split_of(index: int) -> str:
    """Every tenth sentence from the eighth on is ``test``, from the ninth ``dev``, the rest ``train``."""
    return {8: "test", 9: "dev"}.get(index % 10, "train")


def sentences(split: str) -> tuple[str, ...]:
    return tuple(s for i, s in enumerate(SENTENCES) if split_of(i) == split)
