"""Gemma 3's chat template, added to the GGUF-derived tokenizer (the GGUF package ships none).

Gemma 3 has no system role: a system message is folded into the first user turn. It has no tool
format either; this template uses the "pythonic" one vLLM's `pythonic` tool parser reads (the
default RAGDOCK_ENGINE_TOOL_PARSER): the functions, as JSON, join the first user turn, a call is
the reply `[name(argument="value")]`, and tool results come back in a user turn, one line each.
A conversation without tools renders exactly as it did before tools were added. Gemma 4 has a
native system role and another turn syntax; its checkpoints bring their own template, so nothing
here is ever applied to them.
"""

GEMMA3_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- if tools -%}
    {%- set listing = namespace(text="") -%}
    {%- for tool in tools -%}
        {%- set listing.text = listing.text + (tool | tojson) + '\\n' -%}
    {%- endfor -%}
    {%- set first_user_prefix = first_user_prefix + 'You can call these functions:\\n'
        + listing.text + 'To call functions, reply with nothing but a Python list of calls, '
        + 'such as [name(argument="value")].\\n\\n' -%}
{%- endif -%}
{%- set turn = namespace(index=0) -%}
{%- for message in loop_messages -%}
    {%- set continues_tools = message['role'] == 'tool' and not loop.first
        and loop.previtem['role'] == 'tool' -%}
    {%- if not continues_tools -%}
        {%- if (message['role'] in ['user', 'tool']) != (turn.index % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif -%}
        {%- set turn.index = turn.index + 1 -%}
        {%- if message['role'] == 'assistant' -%}
            {%- set role = "model" -%}
        {%- elif message['role'] == 'tool' -%}
            {%- set role = "user" -%}
        {%- else -%}
            {%- set role = message['role'] -%}
        {%- endif -%}
        {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- endif -%}
    {%- if message['role'] == 'tool' -%}
        {{ 'Result of ' + (message['name'] or message['tool_call_id'] or 'a call') + ': ' }}
    {%- endif -%}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- elif message['content'] is none and (message['tool_calls'] or message['role'] == 'tool') -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {%- if message['tool_calls'] -%}
        {{ '[' }}
        {%- for call in message['tool_calls'] -%}
            {%- set function = call['function'] if call['function'] is defined else call -%}
            {{ function['name'] + '(' }}
            {%- if function['arguments'] is mapping -%}
                {%- for name, value in function['arguments'].items() -%}
                    {{ name + '=' + (value | tojson) + (', ' if not loop.last else '') }}
                {%- endfor -%}
            {%- endif -%}
            {{ ')' + (', ' if not loop.last else '') }}
        {%- endfor -%}
        {{ ']' }}
    {%- endif -%}
    {%- if message['role'] == 'tool' and not loop.last and loop.nextitem['role'] == 'tool' -%}
        {{ '\\n' }}
    {%- else -%}
        {{ '<end_of_turn>\\n' }}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\\n' }}
{%- endif -%}
"""

# <bos> is id 2 in every Gemma tokenizer; <eos> is 1 and <end_of_turn> is 106.
BOS_TOKEN_ID = 2
STOP_TOKEN_IDS = [1, 106]
