/*
 * tools/commands.h - the subcommands of the `loom` tool that live in their
 * own files. Each takes the arguments after its name and returns the exit
 * status (0 success, 1 a failure inside Loom, 2 bad arguments).
 */
#ifndef LOOM_TOOLS_COMMANDS_H
#define LOOM_TOOLS_COMMANDS_H

/* loom predict: tools/predict.c */
int loom_tool_predict(int argc, char **argv);

/* loom train and loom eval: tools/train.c */
int loom_tool_train(int argc, char **argv);
int loom_tool_eval(int argc, char **argv);

/* loom bench: tools/bench.c */
int loom_tool_bench(int argc, char **argv);

#endif /* LOOM_TOOLS_COMMANDS_H */
