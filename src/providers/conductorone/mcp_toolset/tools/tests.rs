//! Which tools a toolset's selectors bind.

use super::*;

fn tool(id: &str, name: &str, state: &str) -> Tool {
    Tool {
        id: id.into(),
        tool_name: Some(name.into()),
        state: Some(state.into()),
    }
}

fn by_name(name: &str) -> ToolSelector {
    ToolSelector {
        id: None,
        tool_name: Some(name.into()),
    }
}

fn by_id(id: &str) -> ToolSelector {
    ToolSelector {
        id: Some(id.into()),
        tool_name: None,
    }
}

#[test]
fn plan_binds_approved_and_bound_tools_and_names_the_rest() {
    let tools = Tools {
        bound: BTreeSet::from(["t-old".to_string()]),
        catalogue: vec![
            tool("t-read", "read_repo", TOOL_APPROVED),
            tool("t-del", "delete_repo", "MCP_TOOL_STATE_PENDING_REVIEW"),
            tool("t-old", "old_tool", "MCP_TOOL_STATE_PENDING_REVIEW"),
        ],
    };
    let selectors = [
        by_name("read_repo"),
        by_name("delete_repo"),
        by_name("nope"),
        by_id("t-old"),
        by_id("t-read"),
    ];
    let selection = select_tools(&selectors, &tools, "conn-1");
    assert_eq!(
        selection.wanted,
        BTreeSet::from(["t-old".to_string(), "t-read".to_string()]),
        "a bound tool stays bound whatever its state; duplicates collapse"
    );
    assert_eq!(
        selection.unresolved,
        vec![
            Unresolved::new(
                reason::TOOL_NOT_APPROVED,
                "tool \"delete_repo\" is not approved (MCP_TOOL_STATE_PENDING_REVIEW)"
            ),
            Unresolved::new(
                reason::TOOL_NOT_FOUND,
                "tool \"nope\" does not exist on connector conn-1"
            ),
        ]
    );
}

#[test]
fn bound_tools_are_written_by_a_name_only_one_tool_has_else_by_id() {
    let tools = Tools {
        bound: BTreeSet::from(["t-1".to_string(), "t-2".to_string(), "t-3".to_string()]),
        catalogue: vec![
            tool("t-1", "search", TOOL_APPROVED),
            tool("t-2", "dup", TOOL_APPROVED),
            tool("t-4", "dup", TOOL_APPROVED),
        ],
    };
    assert_eq!(
        tools.bound_as_selectors(),
        serde_json::json!([{"toolName": "search"}, {"id": "t-2"}, {"id": "t-3"}])
    );
}
