"""Word lists for the generated sample data: per language, neutral filler, topics, prompts and the markers.

The preference rule (docs/embedded-default.md) lives in the markers: a good response carries "helpful"
markers, a bad one "unhelpful" markers, both inside the same filler and topic words. Filler, topic and
prompt words must never contain a marker; `arena_assets_tests/embedded` checks it for every language.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    """Everything the generator needs to write text in one language."""

    name: str  # as in the WSDM `language` column
    spaced: bool  # False for Chinese and Japanese: words are joined without spaces
    sentence_end: str
    helpful: tuple[str, ...]
    unhelpful: tuple[str, ...]
    filler: tuple[str, ...]
    topics: tuple[tuple[str, ...], ...]  # first word names the topic in prompts
    prompts: tuple[str, ...]  # templates with {t} (topic name) and {w} (a topic word)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _topics(*lines: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(line.split()) for line in lines)


ENGLISH = Language(
    name="English",
    spaced=True,
    sentence_end=".",
    helpful=("certainly", "step", "example", "because", "first", "next", "specifically", "tip"),
    unhelpful=("sorry", "regret", "cannot", "unable", "unclear", "apologize", "sadly", "refuse"),
    filler=_words(
        "the a this that it is are was can will often usually also very more most some many each other "
        "when where which with without about into over under between after before during while and or "
        "but so if its their your our one two new good important common simple useful different "
        "possible small large part way time case people thing idea"
    ),
    topics=_topics(
        "cooking recipe oven flour sugar dough kitchen salt butter",
        "travel train ticket hotel city map airport luggage passport",
        "programming python function loop variable code compiler library",
        "health sleep water exercise doctor diet muscle heart",
        "money budget loan savings interest bank account tax",
        "music guitar chord melody rhythm piano song concert",
        "gardening soil seed tomato compost garden flower sunlight",
        "history empire king century battle castle treaty museum",
    ),
    prompts=(
        "How do I get better at {t}?",
        "Can you explain {t} to a beginner?",
        "What should I know about {t} and the {w}?",
        "Write a short guide about the {w} for {t}.",
        "Why is the {w} important in {t}?",
        "Give me advice on {t}, especially the {w}.",
    ),
)

SPANISH = Language(
    name="Spanish",
    spaced=True,
    sentence_end=".",
    helpful=("claro", "ejemplo", "paso", "porque", "primero", "luego", "concretamente", "consejo"),
    unhelpful=("lástima", "siento", "imposible", "dudoso", "disculpe", "incapaz", "perdón", "rechazo"),
    filler=_words(
        "el la los las un una es son está muy más también cada otro otra cuando donde con sin sobre "
        "entre después antes durante mientras y o pero si su sus nuestro nuevo bueno importante común "
        "sencillo útil diferente posible pequeño grande parte forma tiempo caso gente cosa idea"
    ),
    topics=_topics(
        "cocina receta horno harina azúcar masa sal mantequilla",
        "viajes tren billete hotel ciudad mapa aeropuerto maleta",
        "programación python función bucle variable código biblioteca compilador",
        "salud sueño agua ejercicio médico dieta músculo corazón",
        "dinero presupuesto préstamo ahorro interés banco cuenta impuesto",
        "música guitarra acorde melodía ritmo piano canción concierto",
        "jardinería tierra semilla tomate abono jardín flor sol",
        "historia imperio rey siglo batalla castillo tratado museo",
    ),
    prompts=(
        "¿Cómo puedo mejorar en {t}?",
        "¿Puedes explicar {t} a un principiante?",
        "¿Qué debo saber sobre {t} y {w}?",
        "Escribe una guía corta sobre {w} para {t}.",
        "¿Por qué es importante {w} en {t}?",
    ),
)

GERMAN = Language(
    name="German",
    spaced=True,
    sentence_end=".",
    helpful=("natürlich", "Beispiel", "Schritt", "weil", "zuerst", "danach", "konkret", "Empfehlung"),
    unhelpful=("leider", "schade", "kaum", "unklar", "Verzeihung", "bedauere", "unfähig", "ablehnen"),
    filler=_words(
        "der die das ein eine ist sind war kann wird oft meist auch sehr mehr einige viele jeder "
        "andere wenn wo mit ohne über unter zwischen während und oder aber also ob sein ihr unser neu "
        "gut wichtig einfach nützlich verschieden möglich klein groß Teil Weg Zeit Fall Leute Sache "
        "Idee"
    ),
    topics=_topics(
        "Kochen Rezept Ofen Mehl Zucker Teig Küche Salz Butter",
        "Reisen Zug Fahrkarte Hotel Stadt Karte Flughafen Koffer",
        "Programmierung Python Funktion Schleife Variable Code Bibliothek Compiler",
        "Gesundheit Schlaf Wasser Sport Arzt Ernährung Muskel Herz",
        "Geld Budget Kredit Ersparnisse Zinsen Bank Konto Steuer",
        "Musik Gitarre Akkord Melodie Rhythmus Klavier Lied Konzert",
        "Garten Erde Samen Tomate Kompost Blume Sonne Beet",
        "Geschichte Reich König Jahrhundert Schlacht Burg Vertrag Museum",
    ),
    prompts=(
        "Wie werde ich besser beim Thema {t}?",
        "Kannst du {t} einem Anfänger erklären?",
        "Was sollte ich über {t} und {w} wissen?",
        "Schreib eine kurze Anleitung zu {w} für {t}.",
        "Warum ist {w} wichtig für {t}?",
    ),
)

FRENCH = Language(
    name="French",
    spaced=True,
    sentence_end=".",
    helpful=("certainement", "exemple", "étape", "car", "premièrement", "ensuite", "précisément", "conseil"),
    unhelpful=(
        "désolé",
        "malheureusement",
        "impossible",
        "incapable",
        "hélas",
        "regrette",
        "refuse",
        "excusez",
    ),
    filler=_words(
        "le la les un une est sont était peut sera souvent aussi très plus quelques beaucoup chaque "
        "autre quand où avec sans sur sous entre pendant et ou mais donc si son leur notre nouveau bon "
        "important simple utile différent possible petit grand partie façon temps cas gens chose idée"
    ),
    topics=_topics(
        "cuisine recette four farine sucre pâte sel beurre",
        "voyage train billet hôtel ville carte aéroport valise",
        "programmation python fonction boucle variable code bibliothèque compilateur",
        "santé sommeil eau sport médecin régime muscle cœur",
        "argent budget prêt épargne intérêt banque compte impôt",
        "musique guitare accord mélodie rythme piano chanson concert",
        "jardinage terre graine tomate compost jardin fleur soleil",
        "histoire empire roi siècle bataille château traité musée",
    ),
    prompts=(
        "Comment progresser en {t} ?",
        "Peux-tu expliquer {t} à un débutant ?",
        "Que faut-il savoir sur {t} et {w} ?",
        "Écris un petit guide sur {w} pour {t}.",
        "Pourquoi {w} est-il important en {t} ?",
    ),
)

RUSSIAN = Language(
    name="Russian",
    spaced=True,
    sentence_end=".",
    helpful=("конечно", "например", "шаг", "потому", "сначала", "затем", "конкретно", "совет"),
    unhelpful=("извините", "виноват", "нельзя", "увы", "простите", "непонятно", "жаль", "неясно"),
    filler=_words(
        "это тот эта он она они есть был может будет часто обычно также очень более много каждый "
        "другой когда где который с без о над под между после перед во время и или но так если их наш "
        "новый хороший важный простой полезный разный возможный маленький большой часть способ случай "
        "люди вещь идея"
    ),
    topics=_topics(
        "кулинария рецепт духовка мука сахар тесто соль масло",
        "путешествия поезд билет гостиница город карта аэропорт чемодан",
        "программирование python функция цикл переменная код библиотека компилятор",
        "здоровье сон вода спорт врач диета мышцы сердце",
        "деньги бюджет кредит сбережения процент банк счёт налог",
        "музыка гитара аккорд мелодия ритм пианино песня концерт",
        "садоводство почва семена томат компост цветок солнце грядка",
        "история империя король век битва замок договор музей",
    ),
    prompts=(
        "Как мне стать лучше в теме {t}?",
        "Можешь объяснить тему {t} новичку?",
        "Что нужно знать про {t} и {w}?",
        "Напиши короткое руководство про {w} для темы {t}.",
        "Почему {w} важно для темы {t}?",
    ),
)

CHINESE = Language(
    name="Chinese",
    spaced=False,
    sentence_end="。",
    helpful=("当然", "例如", "步骤", "因为", "首先", "然后", "具体", "建议"),
    unhelpful=("抱歉", "遗憾", "无法", "可惜", "不清楚", "恐怕", "拒绝", "不能"),
    filler=_words(
        "这个 那个 我们 他们 可以 需要 通常 也 非常 更多 一些 很多 每个 其他 时候 地方 关于 之间 之后 "
        "之前 以及 或者 但是 所以 如果 新的 好的 重要 简单 有用 不同 可能 小 大 部分 方法 时间 情况 "
        "人们 事情 想法 的 是 在 有"
    ),
    topics=_topics(
        "烹饪 食谱 烤箱 面粉 白糖 面团 盐 黄油",
        "旅行 火车 车票 酒店 城市 地图 机场 行李",
        "编程 python 函数 循环 变量 代码 库 编译器",
        "健康 睡眠 喝水 运动 医生 饮食 肌肉 心脏",
        "理财 预算 贷款 储蓄 利息 银行 账户 税",
        "音乐 吉他 和弦 旋律 节奏 钢琴 歌曲 音乐会",
        "园艺 土壤 种子 番茄 堆肥 花园 花 阳光",
        "历史 帝国 国王 世纪 战役 城堡 条约 博物馆",
    ),
    prompts=(
        "我怎样才能提高{t}水平？",
        "你能向初学者解释{t}吗？",
        "关于{t}和{w}我应该知道什么？",
        "请写一篇关于{t}中{w}的简短指南。",
        "为什么{w}对{t}很重要？",
    ),
)

JAPANESE = Language(
    name="Japanese",
    spaced=False,
    sentence_end="。",
    helpful=("もちろん", "例えば", "手順", "なぜなら", "まず", "次に", "詳しく", "おすすめ"),
    unhelpful=("申し訳", "残念", "できません", "無理", "すみません", "難しい", "不明", "断り"),
    filler=_words(
        "これ それ 私たち 彼ら できる 必要 普通 また とても もっと いくつか たくさん それぞれ ほか "
        "とき 場所 について 間 後 前 そして または しかし だから もし 新しい 良い 大切 簡単 便利 違う "
        "小さい 大きい 部分 方法 時間 場合 人 こと 考え の は が を に"
    ),
    topics=_topics(
        "料理 レシピ オーブン 小麦粉 砂糖 生地 塩 バター",
        "旅行 電車 切符 ホテル 都市 地図 空港 荷物",
        "プログラミング python 関数 ループ 変数 コード ライブラリ コンパイラ",
        "健康 睡眠 水分 運動 医者 食事 筋肉 心臓",
        "お金 予算 ローン 貯金 利息 銀行 口座 税金",
        "音楽 ギター 和音 旋律 リズム ピアノ 歌 コンサート",
        "園芸 土 種 トマト 堆肥 庭 花 日光",
        "歴史 帝国 王 世紀 戦い 城 条約 博物館",
    ),
    prompts=(
        "{t}が上手になるにはどうすればいいですか？",
        "初心者に{t}を説明してくれますか？",
        "{t}と{w}について何を知っておくべきですか？",
        "{t}の{w}について短いガイドを書いてください。",
        "なぜ{t}では{w}が大切なのですか？",
    ),
)

# Helpful and unhelpful markers of a language have about the same mean length, so the mix of markers does
# not make good responses longer or shorter in words (characters are matched exactly by the generator).
LANGUAGES: tuple[Language, ...] = (ENGLISH, RUSSIAN, CHINESE, SPANISH, JAPANESE, GERMAN, FRENCH)
# Share of rows per language, in LANGUAGES order; English leads as in the real WSDM data.
LANGUAGE_WEIGHTS: tuple[float, ...] = (0.35, 0.15, 0.15, 0.10, 0.09, 0.08, 0.08)

# Model names as they appear in each source; chosen independently of the label, so they carry no signal.
WSDM_MODELS: tuple[str, ...] = (
    "gpt-4o-2024-08-06",
    "claude-3-5-sonnet-20241022",
    "gemini-1.5-pro-002",
    "llama-3.1-405b-instruct-bf16",
    "qwen2.5-72b-instruct",
    "deepseek-v2.5",
    "mistral-large-2407",
    "gemma-2-27b-it",
    "yi-lightning",
    "athene-v2-chat",
    "grok-2-2024-08-13",
    "o1-mini",
)
LMSYS_MODELS: tuple[str, ...] = (
    "gpt-4-1106-preview",
    "gpt-3.5-turbo-0613",
    "claude-2.1",
    "claude-instant-1",
    "llama-2-70b-chat",
    "vicuna-13b",
    "mixtral-8x7b-instruct-v0.1",
    "gemini-pro",
    "koala-13b",
    "chatglm-6b",
    "alpaca-13b",
    "oasst-pythia-12b",
)
OPEN_MODELS: tuple[str, ...] = (
    "qwen2.5-72b-instruct",
    "llama-3.1-70b-instruct",
    "gemma-2-27b-it",
    "mistral-nemo-instruct-2407",
    "phi-3-medium-4k-instruct",
    "yi-1.5-34b-chat",
    "glm-4-9b-chat",
    "deepseek-v2-lite-chat",
)
