//! What the bot says: the command handlers, run inside the transaction that
//! records the update, so an update's effects and replies commit together.

use std::collections::BTreeSet;

use rusqlite::Transaction;

use crate::config::Unauthorized;
use crate::store::{self, Reply};
use crate::telegram::Update;

/// Longest mood text kept.
const MAX_MOOD: usize = 200;

pub(crate) const HELP: &str = "\
/bored – say you're bored
/mood – show the current mood
/mood <text> – set the mood (admins only)
/status – how this bot is doing
/help – this message";

/// What a handler needs to know about its bot.
#[derive(Debug)]
pub(crate) struct BotInfo {
    pub(crate) name: String,
    pub(crate) username: Option<String>,
    pub(crate) allowed_users: BTreeSet<i64>,
    pub(crate) admins: BTreeSet<i64>,
    pub(crate) unauthorized: Unauthorized,
}

/// Handles one update; `status` is the bot's status line for `/status`.
pub(crate) fn handle(
    tx: &Transaction<'_>,
    bot: &BotInfo,
    update: &Update,
    status: &str,
    now: i64,
) -> rusqlite::Result<Vec<Reply>> {
    let Some(message) = &update.message else { return Ok(Vec::new()) };
    let Some(text) = message.text.as_deref() else { return Ok(Vec::new()) };
    let chat = message.chat.id;
    let private = message.chat.kind == "private";
    let reply = |text: String| Ok(vec![Reply { chat_id: chat, text, reply_to: Some(message.message_id) }]);
    let Some(from) = &message.from else { return Ok(Vec::new()) };

    if !bot.allowed_users.is_empty() && !bot.allowed_users.contains(&from.id) {
        return match bot.unauthorized {
            Unauthorized::Ignore => Ok(Vec::new()),
            Unauthorized::Refuse => reply("Sorry, this bot only talks to the people it was set up for.".to_owned()),
        };
    }

    let Some((command, args)) = parse_command(text, bot.username.as_deref()) else {
        // Another bot's command, or plain chat: answer plain chat in private,
        // stay quiet otherwise.
        let plain = !text.starts_with('/');
        return if private && plain { reply(format!("I answer commands:\n{HELP}")) } else { Ok(Vec::new()) };
    };
    match command {
        "start" => reply(format!("Hi {}! I keep track of the mood and of who's bored.\n\n{HELP}", from.first_name)),
        "help" => reply(HELP.to_owned()),
        "bored" => {
            let count = store::add_bored(tx, &bot.name, from.id, &from.display(), chat, now)?;
            let times =
                if count == 1 { "1 bored so far today".to_owned() } else { format!("{count} bored so far today") };
            reply(format!("Noted, {}: you're bored. {times}.", from.display()))
        }
        "mood" if args.is_empty() => match store::mood(tx)? {
            Some(m) => reply(format!("Current mood: {} (set by {})", m.text, m.set_by)),
            None => reply("No mood set yet.".to_owned()),
        },
        "mood" => {
            if !bot.admins.contains(&from.id) {
                return reply("Only admins can set the mood.".to_owned());
            }
            let mood: String = args.chars().take(MAX_MOOD).collect();
            store::set_mood(tx, &mood, &from.display(), now)?;
            reply(format!("Mood set to: {mood}"))
        }
        "status" => reply(status.to_owned()),
        other => reply(format!("I don't know /{other}.\n\n{HELP}")),
    }
}

/// Splits `/cmd@bot args` into (`cmd`, `args`). A command addressed to
/// another bot (`/cmd@otherbot`) is not ours: `None`.
fn parse_command<'a>(text: &'a str, username: Option<&str>) -> Option<(&'a str, &'a str)> {
    let rest = text.strip_prefix('/')?;
    let (word, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let (command, target) = word.split_once('@').map_or((word, None), |(c, t)| (c, Some(t)));
    if let (Some(target), Some(me)) = (target, username)
        && !target.eq_ignore_ascii_case(me)
    {
        return None;
    }
    if command.is_empty() {
        return None;
    }
    Some((command, args.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::telegram::{Chat, Message, User};

    fn update(id: i64, user: i64, text: &str) -> Update {
        Update {
            update_id: id,
            message: Some(Message {
                message_id: id * 10,
                chat: Chat { id: 500, kind: "private".to_owned() },
                from: Some(User { id: user, first_name: "Ann".to_owned(), username: Some("ann".to_owned()) }),
                text: Some(text.to_owned()),
            }),
        }
    }

    fn bot() -> BotInfo {
        BotInfo {
            name: "moodbot".to_owned(),
            username: Some("mood_bot".to_owned()),
            allowed_users: [1, 2].into(),
            admins: [1].into(),
            unauthorized: Unauthorized::Refuse,
        }
    }

    fn say(store: &Store, bot: &BotInfo, id: i64, user: i64, text: &str) -> Vec<String> {
        let u = update(id, user, text);
        let (out, _) = store
            .handle_batch(
                "moodbot",
                &[u],
                |u| u.update_id,
                true,
                1_000_000,
                |tx, u| handle(tx, bot, u, "moodbot: polling", 1_000_000),
            )
            .unwrap();
        out.into_iter().map(|o| o.text).collect()
    }

    #[test]
    fn commands() {
        let store = Store::memory();
        let bot = bot();
        assert!(say(&store, &bot, 1, 1, "/start").first().unwrap().starts_with("Hi Ann!"));
        assert_eq!(say(&store, &bot, 2, 2, "/mood"), ["No mood set yet."]);
        assert_eq!(say(&store, &bot, 3, 2, "/mood sunny"), ["Only admins can set the mood."]);
        assert_eq!(say(&store, &bot, 4, 1, "/mood@mood_bot  <b>sunny</b> "), ["Mood set to: <b>sunny</b>"]);
        assert_eq!(say(&store, &bot, 5, 2, "/mood"), ["Current mood: <b>sunny</b> (set by @ann)"]);
        assert_eq!(say(&store, &bot, 6, 2, "/bored"), ["Noted, @ann: you're bored. 1 bored so far today."]);
        assert_eq!(say(&store, &bot, 7, 2, "/bored"), ["Noted, @ann: you're bored. 2 bored so far today."]);
        assert!(say(&store, &bot, 8, 2, "/dance").first().unwrap().starts_with("I don't know /dance."));
        assert_eq!(say(&store, &bot, 9, 2, "/status"), ["moodbot: polling"]);
        assert!(say(&store, &bot, 10, 2, "/help@other_bot").is_empty());
        assert_eq!(say(&store, &bot, 11, 3, "/bored"), ["Sorry, this bot only talks to the people it was set up for."]);
        let quiet = BotInfo { unauthorized: Unauthorized::Ignore, ..bot };
        assert!(say(&store, &quiet, 12, 3, "/bored").is_empty());
        assert_eq!(store.recent_bored(10).unwrap().len(), 2);
    }
}
