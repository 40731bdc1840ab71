// A promptfoo provider for tests/evals/test_consumers.py: it answers each exported test case
// with the output its reviewer decided on, read from a JSON file the test writes from the
// database (not from the export): {"<step id>": "text" | {"tool_calls": [...]}}.
const fs = require("fs");

class ReviewedAnswers {
  constructor(options) {
    this.config = options.config; // promptfoo reads config.tools for is-valid-openai-tools-call
    this.answers = JSON.parse(fs.readFileSync(options.config.answers, "utf8"));
  }

  id() {
    return "reviewed-answers";
  }

  async callApi(prompt, context) {
    const stepId = String(context.test.metadata.rq_step_id);
    const answer = this.answers[stepId];
    if (answer === undefined) {
      return { error: `no answer for step ${stepId}` };
    }
    if (typeof answer === "string") {
      return { output: answer };
    }
    return { output: answer.tool_calls }; // arguments already JSON strings, as OpenAI sends them
  }
}

module.exports = ReviewedAnswers;
