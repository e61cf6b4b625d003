//! The site's workflow, for any issue type: its statuses, their categories and the transitions
//! between them, as a table the REST API lists and the model checks transitions against.
//!
//! | Transition | id | From | To |
//! |---|---|---|---|
//! | Start Progress | 11 | To Do | In Progress |
//! | Approve | 21 | To Do, In Progress | Approved |
//! | Done | 31 | In Progress, Approved | Done |
//! | Reject | 41 | To Do, In Progress, Approved | Rejected |
//! | Reopen | 51 | Done, Rejected | To Do |
//! | Stop Progress | 61 | In Progress, Approved | To Do |
//!
//! Statuses: To Do (10000, category new), In Progress (3), Approved (10002, both in progress),
//! Done (10001) and Rejected (10003, both done; resolution Done or Won't Do).

/// A status category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Category {
    pub id: u8,
    pub key: &'static str,
    pub color: &'static str,
    pub name: &'static str,
}

const NEW: Category = Category {
    id: 2,
    key: "new",
    color: "blue-gray",
    name: "To Do",
};
const IN_PROGRESS: Category = Category {
    id: 4,
    key: "indeterminate",
    color: "yellow",
    name: "In Progress",
};
const DONE: Category = Category {
    id: 3,
    key: "done",
    color: "green",
    name: "Done",
};

/// A workflow status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub id: &'static str,
    pub name: &'static str,
    pub category: Category,
    /// The resolution an issue gets on entering it (done statuses): (id, name).
    pub resolution: Option<(&'static str, &'static str)>,
}

/// The statuses; the first is where issues start.
pub const STATUSES: &[Status] = &[
    Status {
        id: "10000",
        name: "To Do",
        category: NEW,
        resolution: None,
    },
    Status {
        id: "3",
        name: "In Progress",
        category: IN_PROGRESS,
        resolution: None,
    },
    Status {
        id: "10002",
        name: "Approved",
        category: IN_PROGRESS,
        resolution: None,
    },
    Status {
        id: "10001",
        name: "Done",
        category: DONE,
        resolution: Some(("10000", "Done")),
    },
    Status {
        id: "10003",
        name: "Rejected",
        category: DONE,
        resolution: Some(("10001", "Won't Do")),
    },
];

/// A workflow transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub id: &'static str,
    pub name: &'static str,
    /// Status ids it starts from.
    pub from: &'static [&'static str],
    pub to: &'static str,
}

/// The transitions (see the module's table).
pub const TRANSITIONS: &[Transition] = &[
    Transition {
        id: "11",
        name: "Start Progress",
        from: &["10000"],
        to: "3",
    },
    Transition {
        id: "21",
        name: "Approve",
        from: &["10000", "3"],
        to: "10002",
    },
    Transition {
        id: "31",
        name: "Done",
        from: &["3", "10002"],
        to: "10001",
    },
    Transition {
        id: "41",
        name: "Reject",
        from: &["10000", "3", "10002"],
        to: "10003",
    },
    Transition {
        id: "51",
        name: "Reopen",
        from: &["10001", "10003"],
        to: "10000",
    },
    Transition {
        id: "61",
        name: "Stop Progress",
        from: &["3", "10002"],
        to: "10000",
    },
];

/// Issue types: (id, name).
pub const ISSUE_TYPES: &[(&str, &str)] = &[
    ("10001", "Task"),
    ("10002", "Change"),
    ("10003", "Story"),
    ("10004", "Bug"),
];

/// A status by id (the table's first when unknown, which cannot happen).
pub fn status(id: &str) -> &'static Status {
    STATUSES.iter().find(|s| s.id == id).unwrap_or(&STATUSES[0])
}

/// The transitions available from a status.
pub fn available(status: &str) -> impl Iterator<Item = &'static Transition> + '_ {
    TRANSITIONS.iter().filter(move |t| t.from.contains(&status))
}
